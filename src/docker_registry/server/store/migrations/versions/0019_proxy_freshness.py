"""The pull-through cache on every worker and node: one ttl clock per cached tag, and claims on manifest fetches.

Revision ID: 0019
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_tag_checks",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column("checked_at", sa.Float, nullable=False),
    )
    op.create_table(
        "proxy_fetches",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("proxy_fetches")
    op.drop_table("proxy_tag_checks")
