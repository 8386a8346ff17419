"""Blobs: which verified blobs exist, and which of them each repository may serve."""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID_OF, StoreBase
from .models import EventRecord
from .tables import blobs, repositories, repository_blobs

_BLOB_SIZE = (
    sa.select(blobs.c.size)
    .select_from(repository_blobs.join(repositories).join(blobs))
    .where(repositories.c.name == sa.bindparam("repository"), repository_blobs.c.digest == sa.bindparam("digest"))
)
_KNOWN_BLOB_SIZE = sa.select(blobs.c.size).where(blobs.c.digest == sa.bindparam("digest"))
_UNLINK = repository_blobs.delete().where(
    repository_blobs.c.repository_id == REPOSITORY_ID_OF, repository_blobs.c.digest == sa.bindparam("digest")
)


class BlobQueries(StoreBase):
    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """Size of a blob this repository may serve, or None."""
        size: int | None = self._scalar(_BLOB_SIZE, {"repository": repository, "digest": str(digest)})
        return size

    def known_blob_size(self, digest: Digest) -> int | None:
        """Size of a verified blob in storage, whatever repository links it."""
        size: int | None = self._scalar(_KNOWN_BLOB_SIZE, {"digest": str(digest)})
        return size

    def link_blob(self, repository: str, digest: Digest, size: int, events: Sequence[EventRecord] = ()) -> None:
        def link(conn: sa.Connection) -> None:
            now = time.time()
            self._link(conn, self._repository_id(conn, repository, now), digest, size, now)
            self._insert_events(conn, events)

        self._write(link)

    def unlink_blob(self, repository: str, digest: Digest, events: Sequence[EventRecord] = ()) -> bool:
        """Stop serving a blob from `repository` and write `events`; False (and no events) if it did not."""
        params = {"repository": repository, "digest": str(digest)}

        def unlink(conn: sa.Connection) -> bool:
            if conn.execute(_UNLINK, params).rowcount == 0:
                return False
            self._insert_events(conn, events)
            return True

        return self._write(unlink)
