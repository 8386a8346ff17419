"""Notifications: each outbox row says how many events it holds (a worker's batch of pull events is one row), so the
queue depth counts the events of rows not read yet, not the rows.

Revision ID: 0021
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("count", sa.Integer, nullable=False, server_default="1"))
    # rows written before hold one JSON event per line
    newline = "chr(10)" if op.get_bind().dialect.name == "postgresql" else "char(10)"
    op.execute(f"UPDATE events SET count = length(payload) - length(replace(payload, {newline}, '')) + 1")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("count")
