"""The seeds' SQL as written: views conversation_logs and training_samples, training_queue.review_status,
daily_training_stats.date, and the registry's mirror tables model_versions and model_metadata.

The views are plain SQL both databases accept, frozen here as this revision makes them (store.VIEWS holds the
current definitions). The two tables are written only by registry_mirror.refresh; MLflow's registry stays the
source of truth.

Revision ID: 0004_seed_views
Revises: 0002
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0004_seed_views"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEWS = {  # changed: training_queue, daily_training_stats; new: conversation_logs, training_samples
    "training_queue": """
        SELECT id, created_at, text, language, predicted_label, confidence, provider,
               review_priority, model_version, review_status
        FROM queries WHERE review_status = 'needs-review'
    """,
    "daily_training_stats": """
        SELECT DATE(created_at) AS day,
               COUNT(*) AS captured,
               SUM(CASE WHEN review_status = 'auto-approved' THEN 1 ELSE 0 END) AS auto_approved,
               SUM(CASE WHEN review_status = 'needs-review' THEN 1 ELSE 0 END) AS needs_review,
               SUM(CASE WHEN review_status = 'approved' THEN 1 ELSE 0 END) AS approved,
               SUM(CASE WHEN review_status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
               AVG(CASE WHEN uncertain THEN 1.0 ELSE 0.0 END) AS uncertain_rate,
               DATE(created_at) AS date
        FROM queries GROUP BY DATE(created_at)
    """,
    "conversation_logs": """
        SELECT id, created_at, text AS user_message, user_hash, session_hash, language,
               predicted_label AS nlu_intent, confidence AS nlu_confidence, provider AS nlu_provider,
               top_label, uncertain, model_version, variant, latency_ms, review_status, review_priority,
               triaged_at, route_taken, final_label, final_confidence, final_provider
        FROM queries
    """,
    "training_samples": """
        SELECT id, query_id, text, label, label AS intent, language, source, confidence, reviewer, split,
               created_at, updated_at, 'approved' AS review_status, trained_version AS model_version_target
        FROM ml_data
    """,
}
CHANGED = ("training_queue", "daily_training_stats")


def _mirror_table(name: str, *columns: sa.Column) -> None:
    """One mirror table: keyed by (model_name, version), stamped with created_at and updated_at."""
    op.create_table(
        name,
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        *columns,
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def _mirror_tables() -> None:
    _mirror_table(
        "model_versions",
        sa.Column("semver", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("test_accuracy", sa.Float),
        sa.Column("production_accuracy", sa.Float),
        sa.Column("fallback_rate", sa.Float),
        sa.Column("traffic_percentage", sa.Float, nullable=False),
        sa.Column("answered", sa.Integer, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
    )
    _mirror_table(
        "model_metadata",
        sa.Column("semver", sa.String(32)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("accuracy", sa.Float),
        sa.Column("f1_score", sa.Float),
        sa.Column("confidence_threshold", sa.Float),
        sa.Column("training_timestamp", sa.DateTime),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("metrics", sa.JSON),
    )


def upgrade() -> None:
    """Re-create the two changed views, create the two new ones and the mirror tables."""
    for name in CHANGED:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")
    _mirror_tables()


def downgrade() -> None:
    """Drop the mirror tables and the new views; the changed views go back to revision 0001's."""
    op.drop_table("model_metadata")
    op.drop_table("model_versions")
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    initial = importlib.import_module("intelrouter.migrations.versions.0001_initial").VIEWS
    for name in CHANGED:
        op.execute(f"CREATE VIEW {name} AS {initial[name]}")
