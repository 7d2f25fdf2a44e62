"""The installation's facts: a fingerprint of the salt the store's identifiers are hashed with.

A serving replica or an import that would hash with another salt (a second host that generated its own) refuses
to start instead of writing hashes that never match the earlier ones. The fingerprint is a SHA-256 of the salt
under a fixed prefix: it tells salts apart without revealing one.

Revision ID: 0007_serving
Revises: 0006_training_lock
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_serving"
down_revision = "0006_training_lock"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the installation table (name -> value)."""
    op.create_table(
        "installation",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop it (the salt file under the data directory stays)."""
    op.drop_table("installation")
