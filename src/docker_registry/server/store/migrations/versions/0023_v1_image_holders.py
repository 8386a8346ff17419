"""v1 images are read through the repositories that hold them, and presented images get ids nobody can compute.

- The auth gate asks, for every v1 image request, which repositories hold the image (`v1_image_holders`): the
  index images are indexed by image id for it (without this index each ask read the whole table).
- `registry_secrets` keeps keys the registry draws once and every worker and node shares: the ids of the v1 chains
  that v2 images are presented as are now keyed hashes of their content. They were plain hashes, so anyone could
  compute the ids of an image they may not pull, list them as their own repository's images and read them, or push
  an image of their own under such an id before the real one was presented. The chains presented until now are
  forgotten, to be presented again under keyed ids; their images go too, except those an image pushed through v1
  names in its ancestry (built on a presented image, which must stay whole).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_v1_repository_images_image", "v1_repository_images", ["image_id", "repository_id"])
    op.create_table(
        "registry_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.execute("DELETE FROM v1_presented")
    # presented images are complete without a payload checksum, which an image pushed through v1 always has
    op.execute(
        "DELETE FROM v1_images WHERE complete AND checksum IS NULL AND NOT EXISTS ("
        "SELECT 1 FROM v1_images pushed WHERE pushed.checksum IS NOT NULL "
        "AND pushed.ancestry LIKE '%\"' || v1_images.id || '\"%')"
    )


def downgrade() -> None:
    op.drop_table("registry_secrets")
    op.drop_index("ix_v1_repository_images_image", "v1_repository_images")
