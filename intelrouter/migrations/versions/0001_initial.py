"""Initial schema: queries, ml_data, review_tasks and the views for people.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEWS = {  # as this revision made them (store.VIEWS holds the current ones)
    "training_queue": """
        SELECT id, created_at, text, language, predicted_label, confidence, provider,
               review_priority, model_version
        FROM queries WHERE review_status = 'needs-review'
    """,
    "daily_training_stats": """
        SELECT DATE(created_at) AS day,
               COUNT(*) AS captured,
               SUM(CASE WHEN review_status = 'auto-approved' THEN 1 ELSE 0 END) AS auto_approved,
               SUM(CASE WHEN review_status = 'needs-review' THEN 1 ELSE 0 END) AS needs_review,
               SUM(CASE WHEN review_status = 'approved' THEN 1 ELSE 0 END) AS approved,
               SUM(CASE WHEN review_status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
               AVG(CASE WHEN uncertain THEN 1.0 ELSE 0.0 END) AS uncertain_rate
        FROM queries GROUP BY DATE(created_at)
    """,
    "model_online_accuracy": """
        SELECT q.model_version, q.variant,
               COUNT(*) AS labelled,
               SUM(CASE WHEN q.top_label = m.label THEN 1 ELSE 0 END) AS correct,
               AVG(CASE WHEN q.top_label = m.label THEN 1.0 ELSE 0.0 END) AS online_accuracy
        FROM queries q JOIN ml_data m ON m.query_id = q.id
        WHERE m.source IN ('feedback', 'override', 'label-studio')
        GROUP BY q.model_version, q.variant
    """,
}


def upgrade() -> None:
    """Create the three tables and their indexes, then the views."""
    op.create_table(
        "queries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("user_hash", sa.String(64)),
        sa.Column("session_hash", sa.String(64)),
        sa.Column("language", sa.String(16)),
        sa.Column("predicted_label", sa.String(200), nullable=False),
        sa.Column("top_label", sa.String(200)),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64)),
        sa.Column("variant", sa.String(16)),
        sa.Column("latency_ms", sa.Float),
        sa.Column("review_status", sa.String(16), nullable=False),
        sa.Column("review_priority", sa.Integer),
        sa.Column("triaged_at", sa.DateTime),
    )
    op.create_index("ix_queries_created_at", "queries", ["created_at"])
    op.create_index("ix_queries_review", "queries", ["review_status", "review_priority", "confidence"])
    op.create_table(
        "ml_data",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("query_id", sa.String(36), sa.ForeignKey("queries.id"), unique=True),
        sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("split", sa.String(32)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("trained_version", sa.String(64)),
    )
    op.create_index("ix_ml_data_created_at", "ml_data", ["created_at"])
    op.create_index("ix_ml_data_trained_version", "ml_data", ["trained_version"])
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("query_id", sa.String(36), sa.ForeignKey("queries.id"), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.Integer),
        sa.Column("priority", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("annotation_id", sa.Integer),
        sa.Column("human_label", sa.String(200)),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("agrees_with_model", sa.Boolean),
        sa.Column("comment", sa.Text),
        sa.Column("pushed_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ux_review_tasks_query_project", "review_tasks", ["query_id", "project_id"], unique=True)
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    """Drop the views, then the tables."""
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("review_tasks")
    op.drop_table("ml_data")
    op.drop_table("queries")
