"""The v1 chains presented until now are forgotten, to be presented again under the checks of f6734f7: a chain may
name only blobs its repository links, of the sizes its manifest gives. Before, a foreign layer (`urls`) naming any
blob of the registry was presented as an image whose layer was that blob, served by image id to anyone who could
push somewhere; a chain recorded then would have stayed readable after the upgrade. Their images go too, except
those something still names (a v1 tag or index images, or the ancestry of an image kept or pushed through v1), as in
0023, whose helper this repeats: a migration's code stays as it ran.

A v1 tag PUT of such an image before the upgrade linked the blob into the tagging repository: no migration can tell
that link from a legitimate one (`docs/deployment.md`).

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM v1_presented")
    conn = op.get_bind()
    named = {row[0] for row in conn.execute(sa.text("SELECT image_id FROM v1_tags"))}
    named |= {row[0] for row in conn.execute(sa.text("SELECT image_id FROM v1_repository_images"))}
    keep: set[str] = set()
    presented: list[str] = []
    for image_id, ancestry, complete, checksum in conn.execute(
        sa.text("SELECT id, ancestry, complete, checksum FROM v1_images")
    ):
        shown = bool(complete) and checksum is None
        if shown:
            presented.append(image_id)
        if not shown or image_id in named:
            keep.update(json.loads(ancestry))
    doomed = [image_id for image_id in presented if image_id not in keep]
    delete = sa.text("DELETE FROM v1_images WHERE id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
    for start in range(0, len(doomed), 500):
        conn.execute(delete, {"ids": doomed[start : start + 500]})


def downgrade() -> None:
    pass  # nothing to restore: chains are presented again when a v1 client asks
