"""Notifications: a row of the outbox may hold a batch of pull events (one per line), so an endpoint's cursor also
counts how many events of the next row it has been given already (a row delivered in several envelopes).

Revision ID: 0017
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_cursors") as batch:
        batch.add_column(sa.Column("given", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("event_cursors") as batch:
        batch.drop_column("given")
