"""v1 images record who pushed them, and a repository's listing of an image that did not exist yet records who
listed it: image ids are global and some are public (those of images pulled from Docker Hub), so one user could push
their own content under an id another user's engine was about to push; that engine found the image already there,
skipped it, and built on it. A listing now holds an image only when its lister could read it, or pushed it.

Rows from before keep today's meaning: images without a pusher, listings that hold what they list.

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("v1_images") as batch:
        batch.add_column(sa.Column("pusher", sa.String(200), nullable=True))
    with op.batch_alter_table("v1_repository_images") as batch:
        batch.add_column(sa.Column("listed_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("v1_repository_images") as batch:
        batch.drop_column("listed_by")
    with op.batch_alter_table("v1_images") as batch:
        batch.drop_column("pusher")
