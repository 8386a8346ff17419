"""Garbage collection's marking of links: a covering index of each manifest's repository.

Marking a link asks, for each of the store's links, whether a manifest of the link's repository references the
blob: the references of the digest come from their index, and each one's manifest from the manifests table, whose
rows carry the manifest's content (a page or so each). This index answers the repository from a few dense pages
instead: on a store of 100,900 links and 10,000 manifests, marking took half the time.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_manifests_id_repository", "manifests", ["id", "repository_id"])


def downgrade() -> None:
    op.drop_index("ix_manifests_id_repository", table_name="manifests")
