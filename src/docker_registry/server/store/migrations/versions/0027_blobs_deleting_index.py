"""The blobs a collection is deleting, indexed alone (a partial index: nearly every row has none): every worker
looks for a dead collection's unfinished deletions every few seconds, which was a scan of every blob.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    being_deleted = sa.text("deleting_since IS NOT NULL")
    op.create_index(
        "ix_blobs_deleting", "blobs", ["deleting_since"], sqlite_where=being_deleted, postgresql_where=being_deleted
    )


def downgrade() -> None:
    op.drop_index("ix_blobs_deleting", "blobs")
