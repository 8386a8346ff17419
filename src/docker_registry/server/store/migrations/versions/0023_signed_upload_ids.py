"""Upload sessions begun without a write: the key that signs their ids, and the ids of sessions that ended.

A POST answers with a signed id (store/upload_ids.py) and writes nothing; the session's row comes with its first
write. `registry_keys` holds the signing key, drawn here once, so every worker and node verifies every id;
`upload_tombstones` holds the ids of signed sessions that ended, so a later write cannot begin them again.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_tombstones",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_upload_tombstones_created", "upload_tombstones", ["created_at"])
    keys = op.create_table(
        "registry_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.bulk_insert(keys, [{"name": "upload-ids", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("registry_keys")
    op.drop_index("ix_upload_tombstones_created", "upload_tombstones")
    op.drop_table("upload_tombstones")
