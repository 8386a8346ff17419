"""Upload sessions record which request is writing to them, so racing chunks cannot interleave.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("writer", sa.String(36), nullable=True))
        batch.add_column(sa.Column("writer_since", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("writer_since")
        batch.drop_column("writer")
