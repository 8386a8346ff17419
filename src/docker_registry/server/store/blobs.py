"""Blobs: which verified blobs exist, and which of them each repository may serve."""

from __future__ import annotations

import time

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import StoreBase, repository_id_of
from .tables import blobs, repositories, repository_blobs


class BlobQueries(StoreBase):
    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """Size of a blob this repository may serve, or None."""
        size: int | None = self._scalar(
            sa.select(blobs.c.size)
            .select_from(repository_blobs.join(repositories).join(blobs))
            .where(repositories.c.name == repository, repository_blobs.c.digest == str(digest))
        )
        return size

    def known_blob_size(self, digest: Digest) -> int | None:
        """Size of a verified blob in storage, whatever repository links it."""
        size: int | None = self._scalar(sa.select(blobs.c.size).where(blobs.c.digest == str(digest)))
        return size

    def link_blob(self, repository: str, digest: Digest, size: int) -> None:
        def link(conn: sa.Connection) -> None:
            now = time.time()
            self._link(conn, self._repository_id(conn, repository, now), digest, size, now)

        self._write(link)

    def unlink_blob(self, repository: str, digest: Digest) -> bool:
        statement = repository_blobs.delete().where(
            repository_blobs.c.repository_id == repository_id_of(repository), repository_blobs.c.digest == str(digest)
        )
        return self._write(lambda conn: conn.execute(statement).rowcount > 0)
