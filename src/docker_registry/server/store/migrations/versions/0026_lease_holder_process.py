"""A lease names its holder's process as the notifications' lease does (`process_identity`), so a garbage
collection killed on this host is replaced at once: the blobs it was deleting stayed refused to uploads for as
long as its lease, then until the next collection.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("holder_process", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("holder_process")
