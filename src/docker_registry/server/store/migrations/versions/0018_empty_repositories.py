"""Garbage collection of empty repositories: since when a repository holds nothing, and the upload sessions of a
repository found by name (an index, as a session names its repository rather than pointing at its row).

Revision ID: 0018
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("repositories", sa.Column("gc_candidate_since", sa.Float, nullable=True))
    op.create_index("ix_uploads_repository", "uploads", ["repository"])


def downgrade() -> None:
    op.drop_index("ix_uploads_repository", table_name="uploads")
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("gc_candidate_since")
