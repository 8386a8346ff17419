"""Blobs: which verified blobs exist, and which of them each repository may serve."""

from __future__ import annotations

import time

import sqlalchemy as sa

from .base import StoreBase, repository_id_of
from .tables import blobs, repositories, repository_blobs


class BlobQueries(StoreBase):
    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob this repository may serve, or None."""
        size: int | None = self._scalar(
            sa.select(blobs.c.size)
            .select_from(repository_blobs.join(repositories).join(blobs))
            .where(repositories.c.name == repository, repository_blobs.c.digest == digest)
        )
        return size

    def known_blob_size(self, digest: str) -> int | None:
        """Size of a verified blob in storage, whatever repository links it."""
        size: int | None = self._scalar(sa.select(blobs.c.size).where(blobs.c.digest == digest))
        return size

    def link_blob(self, repository: str, digest: str, size: int) -> None:
        def link(conn: sa.Connection) -> None:
            now = time.time()
            self._link(conn, self._repository_id(conn, repository, now), digest, size, now)

        self._write(link)

    def unlink_blob(self, repository: str, digest: str) -> bool:
        statement = repository_blobs.delete().where(
            repository_blobs.c.repository_id == repository_id_of(repository), repository_blobs.c.digest == digest
        )
        return self._write(lambda conn: conn.execute(statement).rowcount > 0)
