"""The web UI's orders: a repository's tags by push time, and the latest pushes of the whole registry.

Revision ID: 0014
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tags_repository_updated", "tags", ["repository_id", "updated_at"])
    op.create_index("ix_tags_updated", "tags", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_tags_updated", table_name="tags")
    op.drop_index("ix_tags_repository_updated", table_name="tags")
