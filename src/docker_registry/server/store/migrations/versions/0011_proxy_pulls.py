"""The pull-through cache: when each cached manifest and blob was last pulled, for garbage collection.

Revision ID: 0011
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_pulls",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("pulled_at", sa.Float, nullable=False),
    )
    op.create_index("ix_proxy_pulls_pulled_at", "proxy_pulls", ["pulled_at"])


def downgrade() -> None:
    op.drop_index("ix_proxy_pulls_pulled_at", table_name="proxy_pulls")
    op.drop_table("proxy_pulls")
