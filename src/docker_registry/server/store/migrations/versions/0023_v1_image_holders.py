"""v1 images are read through the repositories that hold them, and presented images get ids nobody can compute.

- The auth gate asks, for every v1 image request, which repositories hold the image (`v1_image_holders`): the
  index images are indexed by image id for it (without this index each ask read the whole table).
- `registry_secrets` keeps keys the registry draws once and every worker and node shares: the ids of the v1 chains
  that v2 images are presented as are now keyed hashes of their content. They were plain hashes, so anyone could
  compute the ids of an image they may not pull, list them as their own repository's images and read them, or push
  an image of their own under such an id before the real one was presented. The chains presented until now are
  forgotten, to be presented again under keyed ids; their images go too, except those something still names (a v1
  tag or index images, or the ancestry of an image kept or pushed through v1: an old engine may have tagged or built
  on a pulled presented image).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import json

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
    _forget_unused_presented_images(op.get_bind())


def _forget_unused_presented_images(conn: sa.Connection) -> None:
    """Delete the images of presented chains (complete, without the payload checksum that every image pushed
    through v1 has) that nothing names: kept are those a v1 tag or a repository's index images name (an old engine
    may have pushed a tag of a pulled presented image) and those in the ancestry of any image kept or pushed. One
    pass over the table, the kept ids in memory: a NOT EXISTS with LIKE per pair took minutes at 10,000 images."""
    named = {row[0] for row in conn.execute(sa.text("SELECT image_id FROM v1_tags"))}
    named |= {row[0] for row in conn.execute(sa.text("SELECT image_id FROM v1_repository_images"))}
    keep: set[str] = set()
    presented: list[str] = []
    rows = conn.execute(sa.text("SELECT id, ancestry, complete, checksum FROM v1_images"))
    for image_id, ancestry, complete, checksum in rows:
        if complete and checksum is None:
            presented.append(image_id)
        if not (complete and checksum is None) or image_id in named:
            keep.update(json.loads(ancestry))
    doomed = [image_id for image_id in presented if image_id not in keep]
    for start in range(0, len(doomed), 500):
        conn.execute(
            sa.text("DELETE FROM v1_images WHERE id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": doomed[start : start + 500]},
        )


def downgrade() -> None:
    op.drop_table("registry_secrets")
    op.drop_index("ix_v1_repository_images_image", "v1_repository_images")
