"""The legacy v1 API: images (json, ancestry, layer blob, checksum, diff_id, complete flag), each repository's
index images, v1 tags (beside the v2 tag they share a name with), repository properties, and the v1 chains
v2-pushed images are presented as.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "v1_images",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("json", sa.LargeBinary, nullable=False),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("ancestry", sa.Text, nullable=False),
        sa.Column("layer_digest", sa.String(200), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("checksum", sa.String(200), nullable=True),
        sa.Column("diff_id", sa.String(200), nullable=True),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "v1_repository_images",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("checksum", sa.String(200), nullable=True),
    )
    op.create_table(
        "v1_tags",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("json", sa.Text, nullable=False),
    )
    op.create_table(
        "v1_repositories",
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("properties", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
    )
    op.create_table(
        "v1_presented",
        sa.Column("manifest_digest", sa.String(200), primary_key=True),
        sa.Column("image_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("v1_presented", "v1_repositories", "v1_tags", "v1_repository_images", "v1_images"):
        op.drop_table(table)
