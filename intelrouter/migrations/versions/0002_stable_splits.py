"""Stable splits and the caller's outcome: ml_data.text_key, a permanent split for every row, queries.route_taken.

Every ground-truth row gets the key of its text (its normalised words) and a split drawn once from that key
(test 20 %, val 10 %, the settings' defaults) unless it carries a train/val/test split of its own; the split is
never drawn again. Queries get what the caller finally did with the answer (`route_taken`) and, when the query
went to a fallback that answered, that answer (`final_label`, `final_confidence`, `final_provider`).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TEST_SHARE, VAL_SHARE = 0.2, 0.1  # the settings' defaults (test_size, val_size) when this migration was written
BATCH = 5000


def upgrade() -> None:
    """Add the columns, then key and split every existing ground-truth row."""
    from intelrouter.keys import known_split, split_of, text_key

    op.add_column("ml_data", sa.Column("text_key", sa.String(64)))
    op.create_index("ix_ml_data_text_key", "ml_data", ["text_key"])
    for column in (sa.Column("route_taken", sa.String(32)), sa.Column("final_label", sa.String(200)),
                   sa.Column("final_confidence", sa.Float), sa.Column("final_provider", sa.String(64))):
        op.add_column("queries", column)
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, text, split FROM ml_data")).all()
    update = sa.text("UPDATE ml_data SET text_key = :k, split = :s WHERE id = :i")
    for start in range(0, len(rows), BATCH):
        batch = []
        for row_id, text, split in rows[start:start + BATCH]:
            key = text_key(text)
            batch.append({"i": row_id, "k": key, "s": known_split(split) or split_of(key, TEST_SHARE, VAL_SHARE)})
        conn.execute(update, batch)


def downgrade() -> None:
    """Drop the added columns (the splits drawn stay in ml_data.split)."""
    for name in ("final_provider", "final_confidence", "final_label", "route_taken"):
        with op.batch_alter_table("queries") as batch:
            batch.drop_column(name)
    op.drop_index("ix_ml_data_text_key", "ml_data")
    with op.batch_alter_table("ml_data") as batch:
        batch.drop_column("text_key")
