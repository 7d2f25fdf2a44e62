"""The lifecycle lock: one row per lock name saying who holds it (the lock itself on SQLite).

On SQLite the row *is* the lock (`intelrouter/locks.py`: taken by inserting it, kept alive by a heartbeat, taken
over when its holder's heartbeat is older than the expiry or its process on this host is gone). On PostgreSQL an
advisory lock is the lock and the row only names the holder for the "another training is running" message.

Revision ID: 0006_training_lock
Revises: 0005_review_groups
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_training_lock"
down_revision = "0005_review_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the locks table."""
    op.create_table(
        "locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop the locks table."""
    op.drop_table("locks")
