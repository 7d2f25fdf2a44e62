"""Review groups and audits: queries.text_key, review_tasks.text_key, and the audits table.

Copies of a question (the same `keys.text_key`) are reviewed once: one Label Studio task per text key and project,
one ledger row per query in `review_tasks` (so the answer fans out to each). `audits` records every query sent to
review to check a label that was not a human's: the random audit sample of a trusted provider (`sample`) and the
label errors the training audit flagged (`label-issue`), with the label under audit and, once a human answered,
the outcome. Existing queries waiting for review, and every query with a ledger row, get their text key now.

Revision ID: 0005_review_groups
Revises: 0004_seed_views
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_review_groups"
down_revision = "0004_seed_views"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    """Add the key columns and the audits table, then key the queries review needs."""
    from intelrouter.keys import text_key

    op.add_column("queries", sa.Column("text_key", sa.String(64)))
    op.create_index("ix_queries_text_key", "queries", ["text_key"])
    op.add_column("review_tasks", sa.Column("text_key", sa.String(64)))
    op.create_index("ix_review_tasks_project_text_key", "review_tasks", ["project_id", "text_key"])
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("query_id", sa.String(36), sa.ForeignKey("queries.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64)),
        sa.Column("source", sa.String(16)),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("uncertainty", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("human_label", sa.String(200)),
        sa.Column("outcome", sa.String(16)),
        sa.Column("answered_at", sa.DateTime),
    )
    op.create_index("ux_audits_query_kind", "audits", ["query_id", "kind"], unique=True)
    op.create_index("ix_audits_kind_provider", "audits", ["kind", "provider", "answered_at"])
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, text FROM queries WHERE review_status = 'needs-review' "
        "OR id IN (SELECT query_id FROM review_tasks)"
    )).all()
    update = sa.text("UPDATE queries SET text_key = :k WHERE id = :i")
    for start in range(0, len(rows), BATCH):
        conn.execute(update, [{"i": i, "k": text_key(t)} for i, t in rows[start:start + BATCH]])
    conn.execute(sa.text(
        "UPDATE review_tasks SET text_key = (SELECT q.text_key FROM queries q WHERE q.id = review_tasks.query_id)"
    ))


def downgrade() -> None:
    """Drop the audits table and the key columns (a plain DROP COLUMN: rebuilding `queries` on SQLite would trip
    the foreign keys of the rows that reference it)."""
    op.drop_table("audits")
    op.drop_index("ix_review_tasks_project_text_key", "review_tasks")
    op.execute("ALTER TABLE review_tasks DROP COLUMN text_key")
    op.drop_index("ix_queries_text_key", "queries")
    op.execute("ALTER TABLE queries DROP COLUMN text_key")
