"""Upload sessions: creation, the writer's claim and its lease, and the commit that links the finished blob.

Session writes commit without waiting for the disk (`durable=False`): their chunks are not fsynced either, and the
durable commit that links the finished blob carries them along.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import StoreBase
from .models import Upload
from .tables import uploads

WRITER_LEASE_SECONDS = 60.0
"""A session's writer renews its claim well within this; a claim not renewed for this long belongs to a process
that died (on another host: on its own, the claimant's host frees the claim at once) and another may take over."""

_UPLOAD_COLUMNS = (
    uploads.c.id,
    uploads.c.repository,
    uploads.c.size,
    uploads.c.writer,
    uploads.c.writer_process,
    uploads.c.writer_since,
)


def _upload(row: sa.RowMapping) -> Upload:
    return Upload(row["id"], row["repository"], row["size"], row["writer"], row["writer_process"], row["writer_since"])


class UploadQueries(StoreBase):
    writer_lease = WRITER_LEASE_SECONDS

    def upload(self, upload_id: str) -> Upload | None:
        query = sa.select(*_UPLOAD_COLUMNS).where(uploads.c.id == upload_id)
        row = self._read(lambda conn: conn.execute(query).mappings().first())
        return _upload(row) if row else None

    def create_upload(self, upload_id: str, repository: str) -> None:
        now = time.time()
        statement = uploads.insert().values(id=upload_id, repository=repository, size=0, created_at=now, updated_at=now)
        self._write(lambda conn: conn.execute(statement), durable=False)

    def claim_upload(
        self,
        upload_id: str,
        repository: str,
        size: int | None,
        token: str,
        process: str | None = None,
        takeover: str | None = None,
    ) -> Upload | None:
        """Become the session's only writer, if it belongs to `repository`, holds `size` bytes (when given) and no
        live writer has it (or its writer is `takeover`, a claim found dead); the session as claimed, or None.
        One statement: this runs before every chunk."""

        def claim(conn: sa.Connection) -> Upload | None:
            now = time.time()
            free = [uploads.c.writer.is_(None), uploads.c.writer_since < now - self.writer_lease]
            if takeover is not None:
                free.append(uploads.c.writer == takeover)
            conditions = [uploads.c.id == upload_id, uploads.c.repository == repository, sa.or_(*free)]
            if size is not None:
                conditions.append(uploads.c.size == size)
            claimed = conn.execute(
                uploads.update()
                .where(*conditions)
                .values(writer=token, writer_since=now, writer_process=process)
                .returning(uploads.c.size)
            ).scalar()
            return None if claimed is None else Upload(upload_id, repository, claimed, token, process, now)

        return self._write(claim, durable=False)

    def _update_claimed(self, upload_id: str, token: str, **values: Any) -> bool:
        """Update the session if `token` still holds its claim; False if not (the session was deleted)."""
        statement = uploads.update().where(uploads.c.id == upload_id, uploads.c.writer == token).values(**values)
        return self._write(lambda conn: conn.execute(statement).rowcount > 0, durable=False)

    def renew_upload(self, upload_id: str, token: str) -> bool:
        """Extend the writer's lease; False if the claim is no longer the writer's (the session was deleted)."""
        return self._update_claimed(upload_id, token, writer_since=time.time())

    def release_upload(self, upload_id: str, token: str, size: int) -> bool:
        """Record the session's new size and let the next writer in; False if the session was deleted meanwhile."""
        return self._update_claimed(
            upload_id, token, size=size, writer=None, writer_since=None, writer_process=None, updated_at=time.time()
        )

    def delete_upload(self, upload_id: str) -> Upload | None:
        """End a session whoever writes to it; the session as it was (with its writer, if any), or None."""
        statement = uploads.delete().where(uploads.c.id == upload_id).returning(*_UPLOAD_COLUMNS)
        row = self._write(lambda conn: conn.execute(statement).mappings().first(), durable=False)
        return _upload(row) if row else None

    def finish_upload(self, upload_id: str, repository: str, digest: Digest, size: int, token: str | None) -> bool:
        """Link the verified blob to its repository and end the session, in one transaction. With the writer's
        `token`, nothing is linked (False) if the session was deleted meanwhile."""

        def finish(conn: sa.Connection) -> bool:
            now = time.time()
            ended = conn.execute(uploads.delete().where(uploads.c.id == upload_id, uploads.c.writer == token))
            if token is not None and ended.rowcount == 0:
                return False
            self._link(conn, self._repository_id(conn, repository, now), digest, size, now)
            return True

        return self._write(finish)
