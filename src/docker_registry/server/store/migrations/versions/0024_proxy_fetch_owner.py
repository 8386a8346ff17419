"""A manifest fetch's claim names its process as upload claims do (`process_identity`, some 80 characters), so a
worker waiting on a claim whose process died on this host takes over at once instead of after the lease.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_fetches") as batch:
        batch.alter_column("owner", type_=sa.String(200), existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM proxy_fetches")  # claims of a moment whose owners no longer fit the narrower column
    with op.batch_alter_table("proxy_fetches") as batch:
        batch.alter_column("owner", type_=sa.String(64), existing_type=sa.String(200), existing_nullable=False)
