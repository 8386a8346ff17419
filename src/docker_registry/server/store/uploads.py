"""Upload sessions: creation, the writer's claim and its lease, and the commit that links the finished blob.

Session writes commit without waiting for the disk (`durable=False`): their chunks are not fsynced either, and the
durable commit that links the finished blob carries them along. Nor do they signal a change to every worker's
caches (`signal=False`, see `engine.write_transaction`): the caches hold tags, manifests and which blobs a repository
links, and a session write changes none of these (a pin holds a blob's row at the size its verified digest fixes;
the link comes with `finish_upload`, which signals). Before, each of a small blob's four session writes emptied
every worker's caches, and with them the answers to the HEADs of the blobs other clients were about to push.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import StoreBase
from .blobs import UNPIN, hold_and_pin
from .models import WRITER_LEASE_SECONDS, EventRecord, Upload
from .prepared import Prepared
from .tables import uploads

T = TypeVar("T")
Claim = tuple[str, str, int | None, str, str | None]
"""A writer's claim as `claim_upload` takes it: session id, repository, size expected (None: any), token, process."""
Appending = Callable[[int], tuple[bool, int]]
"""Appends a chunk to a session's storage at the claimed size: whether it was, and the size storage holds."""

_UPLOAD_COLUMNS = (
    uploads.c.id,
    uploads.c.repository,
    uploads.c.size,
    uploads.c.writer,
    uploads.c.writer_process,
    uploads.c.writer_since,
    uploads.c.owner,
)


_UPLOAD = Prepared(sa.select(*_UPLOAD_COLUMNS).where(uploads.c.id == sa.bindparam("upload_id")))
_CREATE = Prepared(
    uploads.insert().values(
        id=sa.bindparam("upload_id"),
        repository=sa.bindparam("upload_repository"),
        size=0,
        owner=sa.bindparam("owner"),
        created_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
    )
)


def _claim_statement(takeover: bool, sized: bool) -> sa.Executable:
    free = [uploads.c.writer.is_(None), uploads.c.writer_since < sa.bindparam("stale")]
    if takeover:
        free.append(uploads.c.writer == sa.bindparam("takeover"))
    conditions = [
        uploads.c.id == sa.bindparam("upload_id"),
        uploads.c.repository == sa.bindparam("upload_repository"),
        sa.or_(*free),
    ]
    if sized:
        conditions.append(uploads.c.size == sa.bindparam("expected_size"))
    return (
        uploads.update()
        .where(*conditions)
        .values(writer=sa.bindparam("token"), writer_since=sa.bindparam("now"), writer_process=sa.bindparam("process"))
        .returning(uploads.c.size)
    )


_CLAIM = {
    (takeover, sized): Prepared(_claim_statement(takeover, sized))
    for takeover in (False, True)
    for sized in (False, True)
}
"""`claim_upload`'s statement, by (with a claim to take over, with the size expected)."""

_CLAIMED = (uploads.c.id == sa.bindparam("upload_id"), uploads.c.writer == sa.bindparam("token"))
_RENEW = Prepared(uploads.update().where(*_CLAIMED).values(writer_since=sa.bindparam("now")))
_RELEASE = Prepared(
    uploads.update()
    .where(*_CLAIMED)
    .values(
        size=sa.bindparam("new_size"),
        writer=None,
        writer_since=None,
        writer_process=None,
        updated_at=sa.bindparam("now"),
    )
)
_DELETE = Prepared(uploads.delete().where(uploads.c.id == sa.bindparam("upload_id")).returning(*_UPLOAD_COLUMNS))
_END_CLAIMED = Prepared(uploads.delete().where(*_CLAIMED))
_END_UNCLAIMED = Prepared(uploads.delete().where(uploads.c.id == sa.bindparam("upload_id"), uploads.c.writer.is_(None)))


def _upload(row: sa.RowMapping) -> Upload:
    return Upload(
        row["id"],
        row["repository"],
        row["size"],
        row["writer"],
        row["writer_process"],
        row["writer_since"],
        row["owner"],
    )


class UploadQueries(StoreBase):
    writer_lease = WRITER_LEASE_SECONDS

    def upload(self, upload_id: str) -> Upload | None:
        row = self._read(lambda conn: _UPLOAD.run(conn, {"upload_id": upload_id}).mappings().first())
        return _upload(row) if row else None

    def _session_write(self, work: Callable[[sa.Connection], T]) -> T:
        """A session's bookkeeping: not durable, no signal to the caches (see the module's docstring)."""
        return self._write(work, durable=False, signal=False)

    def create_upload(self, upload_id: str, repository: str, owner: str | None = None) -> None:
        params = {"upload_id": upload_id, "upload_repository": repository, "owner": owner, "now": time.time()}
        self._session_write(lambda conn: _CREATE.run(conn, params))

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
            claimed = self._claimed_size(conn, (upload_id, repository, size, token, process), takeover, now)
            return None if claimed is None else Upload(upload_id, repository, claimed, token, process, now)

        return self._session_write(claim)

    def append_small(self, claim: Claim, append: Appending) -> tuple[int, bool, int] | None:
        """Claim the session as `claim_upload(*claim)` does, run `append(claimed_size)` (a small chunk appended to its
        storage: whether it was, and the size storage holds), and release the claim at that size, in one write:
        the transaction's lock (SQLite's write lock, PostgreSQL's lock on the row, whose waiters see the new size)
        is the claim while the bytes go in, so no claim outlives it (none to recover after a killed writer, none to
        renew) and two writes are one. The claimed size, whether the chunk was
        appended, and the session's size now; None when the claim fails (then nothing was appended).

        A transaction rolled back after `append` ran (a batch run again, a commit that failed) leaves the bytes in
        storage beyond the recorded size; `append` run again finds them and counts them appended (see
        `Base.appender`), and a later chunk finds the size it did not expect, as after any killed writer."""

        upload_id, token = claim[0], claim[3]

        def claim_append_release(conn: sa.Connection) -> tuple[int, bool, int] | None:
            now = time.time()
            claimed = self._claimed_size(conn, claim, None, now)
            if claimed is None:
                return None
            appended, stored = append(claimed)
            _RELEASE.run(conn, {"upload_id": upload_id, "token": token, "new_size": stored, "now": now})
            return claimed, appended, stored

        return self._session_write(claim_append_release)

    def claim_upload_pinned(
        self,
        upload_id: str,
        repository: str,
        size: int | Callable[[], int | None],
        token: str,
        process: str | None,
        digest: Digest,
        blob_size: int | None = None,
    ) -> tuple[Upload | None, bool]:
        """`claim_upload` of a session holding exactly `size` bytes, and in the same transaction
        `pin_blob(digest, blob_size, upload_id)`: the finishing PUT's two session writes in one. The blob's bytes
        are verified to be `digest` already: the session's `size` bytes (the running hash of the request that
        wrote them; `blob_size` is then `size`), or those and a body received whole that the caller writes next
        (`blob_size` bytes in all). The claim (or None) and whether the pin was taken (not while a collector
        deletes the blob: the caller pins again later, as without this).

        `size` may instead be a blocking read run in the same transaction, before the claim: it reads the session's
        bytes from storage (a small session another process wrote) and verifies them against `digest`, answering
        their size, or None (other bytes, or none it could read) to claim nothing. It may run again if the
        transaction does (see `run_batch`): it only reads."""

        def claim(conn: sa.Connection) -> tuple[Upload | None, bool]:
            claimed_size = size() if callable(size) else size
            if claimed_size is None:
                return None, False
            now = time.time()
            if self._claimed_size(conn, (upload_id, repository, claimed_size, token, process), None, now) is None:
                return None, False
            claimed = Upload(upload_id, repository, claimed_size, token, process, now)
            pinned_size = claimed_size if blob_size is None else blob_size
            return claimed, hold_and_pin(conn, digest, pinned_size, upload_id)

        return self._session_write(claim)

    def _claimed_size(self, conn: sa.Connection, claim: Claim, takeover: str | None, now: float) -> int | None:
        """Run the `_CLAIM` statement for `claim` (and `takeover`, a claim found dead): the size claimed, or None."""
        upload_id, repository, size, token, process = claim
        params = {
            "upload_id": upload_id,
            "upload_repository": repository,
            "stale": now - self.writer_lease,
            "expected_size": size,
            "token": token,
            "now": now,
            "process": process,
            "takeover": takeover,
        }
        claimed: int | None = _CLAIM[takeover is not None, size is not None].run(conn, params).scalar()
        return claimed

    def _update_claimed(self, statement: Prepared, params: dict[str, Any]) -> bool:
        """Run `statement` (`_RENEW`, `_RELEASE`) if the session's claim is still `params["token"]`'s; False if not
        (the session was deleted)."""
        return self._session_write(lambda conn: statement.run(conn, params).rowcount > 0)

    def renew_upload(self, upload_id: str, token: str) -> bool:
        """Extend the writer's lease; False if the claim is no longer the writer's (the session was deleted)."""
        return self._update_claimed(_RENEW, {"upload_id": upload_id, "token": token, "now": time.time()})

    def release_upload(self, upload_id: str, token: str, size: int) -> bool:
        """Record the session's new size and let the next writer in; False if the session was deleted meanwhile."""
        return self._update_claimed(
            _RELEASE, {"upload_id": upload_id, "token": token, "new_size": size, "now": time.time()}
        )

    def delete_upload(self, upload_id: str) -> Upload | None:
        """End a session whoever writes to it; the session as it was (with its writer, if any), or None."""
        params = {"upload_id": upload_id}
        row = self._session_write(lambda conn: _DELETE.run(conn, params).mappings().first())
        return _upload(row) if row else None

    def finish_upload(
        self,
        upload_id: str,
        repository: str,
        digest: Digest,
        size: int,
        token: str | None,
        events: Sequence[EventRecord] = (),
    ) -> bool:
        """Link the verified blob to its repository, end the session and write `events`, in one transaction. With
        the writer's `token`, nothing is linked or written (False) if the session was deleted meanwhile."""

        def finish(conn: sa.Connection) -> bool:
            now = time.time()
            # writer IS NULL without a token, as `uploads.c.writer == None` always said
            statement = _END_UNCLAIMED if token is None else _END_CLAIMED
            ended = statement.run(conn, {"upload_id": upload_id, "token": token})
            UNPIN.run(conn, {"digest": str(digest), "token": upload_id})  # the link (or nothing) from now on
            if token is not None and ended.rowcount == 0:
                return False
            self._link(conn, self._repository_id(conn, repository, now), digest, size, now)
            self._insert_events(conn, events)
            return True

        return self._write(finish)
