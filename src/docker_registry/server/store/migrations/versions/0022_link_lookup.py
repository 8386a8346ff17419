"""A repository's link to a blob found by both columns from either side: the digest index also holds the repository.

A mount looks up the source repository's link to the digest. On PostgreSQL a prepared statement's generic plan,
made without the values, could start from the digest's index and filter each link by repository: every repository
that links a popular base layer was visited on every mount of it (about 800 index scans per mount in
`bench/run.py --small-writes --database postgres`). With the repository in this index, whichever index a plan starts
from finds the one link.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_repository_blobs_digest", "repository_blobs")
    op.create_index("ix_repository_blobs_digest", "repository_blobs", ["digest", "repository_id"])


def downgrade() -> None:
    op.drop_index("ix_repository_blobs_digest", "repository_blobs")
    op.create_index("ix_repository_blobs_digest", "repository_blobs", ["digest"])
