"""Online garbage collection: candidate marks with their time, blobs being deleted, upload pins and leases.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("gc_candidate_since", sa.Float, nullable=True))
        batch.add_column(sa.Column("deleting_since", sa.Float, nullable=True))
    with op.batch_alter_table("repository_blobs") as batch:
        batch.add_column(sa.Column("gc_candidate_since", sa.Float, nullable=True))
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("gc_candidate_since", sa.Float, nullable=True))
    op.create_index("ix_manifest_references_digest", "manifest_references", ["digest", "kind", "manifest_id"])
    op.create_index("ix_tags_manifest", "tags", ["manifest_id"])
    op.create_index("ix_repository_blobs_digest", "repository_blobs", ["digest"])
    op.create_index("ix_v1_images_layer_digest", "v1_images", ["layer_digest"])  # v1 layers are references too
    op.create_table(
        "blob_pins",
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("token", sa.String(36), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("blob_pins")
    op.drop_index("ix_v1_images_layer_digest", "v1_images")
    op.drop_index("ix_repository_blobs_digest", "repository_blobs")
    op.drop_index("ix_tags_manifest", "tags")
    op.drop_index("ix_manifest_references_digest", "manifest_references")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("gc_candidate_since")
    with op.batch_alter_table("repository_blobs") as batch:
        batch.drop_column("gc_candidate_since")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("deleting_since")
        batch.drop_column("gc_candidate_since")
