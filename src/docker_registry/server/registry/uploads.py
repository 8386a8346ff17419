"""Blob upload sessions: bytes appended in the driver (`upload_area`), sessions in the metadata store.

Any process can continue a session another began. A request writing to a session first claims it in the metadata
store (which also checks the offset), so racing chunks cannot interleave. A claim names its process: one left by
a process that died on this host is taken over as soon as the session is asked about, and storage decides the
size (a chunk may have been cut anywhere); claims of other hosts expire with their lease. Each process keeps the
running hash of the sessions it served while the stored size still matches it; otherwise the stored bytes are
hashed again before the digest is checked. A blob becomes visible only after its bytes matched the digest the
client announced and were made durable. On a driver whose `move` copies the bytes (S3), a blob sent whole in the
closing PUT skips the upload area and goes straight to its path (`_complete_in_place`); on the others, so does a
small one, received and verified before the session is claimed (`_complete_whole`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, Hasher, blob_path
from docker_registry.core.driver import Base, Writer

from ..store.batching import Followup
from ..store.facade import AsyncMetadataStore
from ..store.models import WRITER_LEASE_SECONDS, EventRecord, Upload
from .errors import BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, RegistryError, blob_being_deleted
from .process_identity import is_dead, this_process
from .upload_area import new_upload_id, upload_area, upload_path

log = logging.getLogger(__name__)
HASH_ALGORITHM = "sha256"
MAX_KEPT_HASHERS = 1000
EventsOf = Callable[[int], Sequence[EventRecord]]
"""The events to write with a finished blob, given its verified size (see `events`). Called in the request's
`contextvars` context, on the event loop's thread or in the database writer's (`Uploads._linker`)."""
INLINE_HASH_MAX = 64 * 1024
"""Chunks up to this size are hashed on the event loop (tens of microseconds); larger ones in a thread."""
UNCLAIMED_HASH_MAX = 1024 * 1024
"""A session finished by a PUT without a body on another process than its last PATCH is hashed before it is
claimed (`Uploads._claim_verified`) when it holds at most this many bytes; a larger one is claimed first and
hashed after, as the hash would be lost if the claim failed."""
PIN_WAIT_SECONDS = 10.0
"""How long a finished upload waits for garbage collection to finish deleting an earlier copy of its blob (a
collector deletes a blob's file right after marking it, so this is milliseconds unless the collector died)."""


class _Mismatch(Exception):
    """The bytes of a blob written in place did not match its digest: raised from its chunks, so that the driver's
    `stream_write` publishes nothing."""


LATE_RELEASE_INTERVAL = 1.0
"""Seconds between two tries of a claim's release the database could not take (`Uploads._release_later`)."""


def progress_headers(size: int) -> dict[str, str]:
    return {"Range": f"0-{max(size - 1, 0)}"}


DATA_MISSING = (exceptions.FileNotFoundError, exceptions.WrongArgumentsError)
"""A session's data not where its id says (`upload_path`): gone, or, on a root shared with a node of the version
before the flat layout, that node's folder where this one keeps an object (docs/deployment.md: replace such nodes
together). Either way the session is unknown here (404, the client starts again), not a server error."""


def _gone(upload_id: str) -> RegistryError:
    return RegistryError(
        BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id}, message="the upload was cancelled or its data is gone"
    )


_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An upload id as `start` makes it (and clients send it back): taken as it is, without parsing it into a UUID
and formatting it again (3 µs, on every request of a session)."""


def _check_id(upload_id: str) -> str:
    if _CANONICAL_ID.fullmatch(upload_id):
        return upload_id
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id[:100]}) from None


def _new_token() -> str:
    """A claim's token: any unguessable string up to 36 characters does; `str(uuid.uuid4())` cost 5 µs, this 1."""
    return os.urandom(16).hex()


def _hash_chunk(hasher: Hasher, chunk: bytes) -> asyncio.Future[None] | None:
    """Hash a chunk up to `INLINE_HASH_MAX` at once (~12 us for 20 KB: less than the hop to a thread and back);
    a larger one in a thread, whose future is returned for the caller to await when it needs the hash."""
    if len(chunk) <= INLINE_HASH_MAX:
        hasher.update(chunk)
        return None
    return asyncio.ensure_future(asyncio.to_thread(hasher.update, chunk))


async def _pump(chunks: AsyncIterable[bytes], writer: Writer, hasher: Hasher | None) -> None:
    """Write each chunk while the next one is received, and hash it once its write succeeded, while the next one is
    written: receiving, writing and hashing overlap, one of each in flight.

    Only bytes the writer took are hashed. A write can fail after the writer counted its chunk (a full disk, halfway
    through): a hash of that chunk would then match the session's recorded size and vouch, at the closing PUT, for
    bytes storage does not hold; without it, the sizes differ, the running hash is not kept, and the stored bytes
    are hashed again."""
    writing: asyncio.Future[int] | None = None
    hashing: asyncio.Future[None] | None = None
    written = b""  # the chunk `writing` writes
    try:
        async for chunk in chunks:
            if writing is not None:
                await writing
                if hashing is not None:
                    await hashing
                hashing = _hash_chunk(hasher, written) if hasher is not None else None
            writing, written = asyncio.ensure_future(writer.write(chunk)), chunk
    finally:
        # settled, and the last chunk hashed if it was written, before the caller reads sizes or closes the writer,
        # even when the body broke off
        await _settle(writing, hashing, hasher, written)


async def _settle(
    writing: asyncio.Future[int] | None, hashing: asyncio.Future[None] | None, hasher: Hasher | None, written: bytes
) -> None:
    """Wait for `_pump`'s last write and hash; raise the first that failed, else hash the chunk just written."""
    pending = [f for f in (writing, hashing) if f is not None]
    if not pending:
        return
    await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
    for future in pending:
        if not future.cancelled() and (error := future.exception()) is not None:
            raise error
    stored = writing is not None and not writing.cancelled()
    if stored and hasher is not None and (last := _hash_chunk(hasher, written)) is not None:
        await asyncio.shield(last)


SMALL_CHUNK_MAX = INLINE_HASH_MAX
"""A request body up to this size is received whole, then stored and hashed in one step (`Uploads._write`)."""


@dataclass(slots=True)
class _Stored:
    """How many bytes a session holds in storage while a request writes to it: what its claim is released at, also
    when the write fails; and whether they are durable already (a finishing chunk streamed through a writer)."""

    size: int
    synced: bool = False


def _stored_size_differs(upload: Upload, found: int) -> RegistryError:
    """Only after a process died mid-chunk: the client must resume from what storage holds."""
    return RegistryError(
        RANGE_INVALID, f"the upload holds {found} bytes, not {upload.size}", headers=progress_headers(found)
    )


async def _receive_small(chunks: AsyncIterator[bytes], received: list[bytes]) -> bool:
    """Receive chunks into `received` while they total at most `SMALL_CHUNK_MAX` bytes: True if that was the
    whole body, False once more arrived (the rest is still to be read from `chunks`)."""
    total = 0
    async for chunk in chunks:
        received.append(chunk)
        total += len(chunk)
        if total > SMALL_CHUNK_MAX:
            return False
    return True


async def _chained(received: list[bytes], chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in received:
        yield chunk
    async for chunk in chunks:
        yield chunk


async def _broken_off(received: list[bytes], error: Exception) -> AsyncIterator[bytes]:
    """A body that broke off after `received`, given again to the usual path, which stores what arrived."""
    for chunk in received:
        yield chunk
    raise error


@dataclass(frozen=True, slots=True)
class _Moved:
    """A blob's bytes published at its path already, in the database writer's thread (`_Publishing`): a session's
    moved there (`Base.mover`) or a whole body written there (`Base.putter`). Whether they were (False: an object
    was there already), or what that raised, for `Uploads._place` or `Uploads._complete_whole` to go on from as if
    they had just awaited it. `linked`: the blob was new and its link written in the writer's thread too
    (`finish_upload`'s answer); None if not."""

    moved: bool
    error: Exception | None = None
    linked: bool | None = None

    def result(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.moved


_Claimed = tuple[Upload | None, bool]
"""`claim_upload_pinned`'s answer: the session if claimed, and whether its blob is pinned."""
_Published = tuple[_Claimed, _Moved | None]
"""The claim, and what publishing its blob in the writer's thread did (None: nothing was tried)."""
_Link = Callable[[Upload], Callable[[], bool]]
"""The write that links a claimed session's blob and ends the session (`finish_upload`), given the claim."""


class _Publishing:
    """The step that follows a claim with its pin in the writer's thread (`claim_upload_pinned_then`): `place`
    the verified bytes at their blob's path (`Base.mover`, `Base.putter`) if the session was claimed and the blob
    pinned (otherwise the usual path claims or pins first), and when they were placed (a new blob, the common case)
    their link in the writer's next batch: the three writes a closing PUT makes, in their order (pin committed,
    bytes durable at their path, link committed), without a trip back to the event loop between them. The error of
    `place` is kept, not raised, so the claim's answer still arrives; a blob found at its path already goes back to
    the usual path, which asks the database whether it is a verified copy. An error of the link itself (the
    database's) is raised to the caller, which then ends the claim: `placed` says whether the bytes went (a
    session's, when `moves_session`: nothing is left of it to resume)."""

    def __init__(self, place: Callable[[], bool], link: _Link, *, moves_session: bool) -> None:
        self._place = place
        self._link = link
        self.moves_session = moves_session
        self.placed = False

    def __call__(self, claimed: _Claimed) -> _Published | Followup[_Published]:
        upload, pinned = claimed
        if upload is None or not pinned:
            return claimed, None
        try:
            if not self._place():
                return claimed, _Moved(False)
        except Exception as error:
            return claimed, _Moved(False, error)
        self.placed = True
        finish = self._link(upload)
        return Followup(lambda: (claimed, _Moved(True, linked=finish())))


class _Verified:
    """A small session's bytes read and hashed in the transaction that claims it (`claim_upload_pinned`):
    the size to claim at if they are `digest`. `hasher` is left None if nothing was read there (more than a small
    chunk, or nothing written): the caller then reads the usual way."""

    def __init__(self, read: Callable[[], bytes | None], digest: Digest) -> None:
        self._read = read
        self._digest = digest
        self.hasher: Hasher | None = None

    def __call__(self) -> int | None:
        data = self._read()
        if data is None:
            return None
        hasher = Hasher(self._digest.algorithm)
        hasher.update(data)  # at most SMALL_CHUNK_MAX bytes: tens of microseconds
        self.hasher = hasher
        return hasher.size if hasher.digest() == self._digest else None


@dataclass(slots=True)
class _Held:
    """A claim a request of this worker holds: its session, and when it was last renewed (or made), in loop time."""

    upload_id: str
    renewed: float


class Uploads:
    def __init__(self, store: AsyncMetadataStore, driver: Base) -> None:
        self._store = store
        self._driver = driver
        self._hashers: dict[str, Hasher] = {}
        self._held: dict[str, _Held] = {}
        """The claims this worker's requests hold, by token."""
        self._sweeper: asyncio.Future[None] | None = None
        self._late_releases: set[asyncio.Future[None]] = set()
        """Claims whose release the database could not take when their request ended (`_release_later`)."""

    async def start(self, repository: str, owner: str | None = None) -> Upload:
        upload = Upload(new_upload_id(not self._driver.moves_by_copy), repository, 0, owner=owner)
        await self._store.create_upload(upload.id, repository, owner)
        return upload

    async def get(self, repository: str, upload_id: str) -> Upload:
        upload = await self._store.upload(_check_id(upload_id))
        if upload is None or upload.repository != repository:
            raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id})
        if upload.writer is not None and is_dead(upload.writer_process):
            upload = await self._recover(upload)
        return upload

    def _abandoned(self, upload: Upload) -> bool:
        """True when the session's writer can write no more: its process died here, or its lease ran out."""
        expired = (upload.writer_since or 0) < time.time() - self._store.writer_lease
        return upload.writer is not None and (is_dead(upload.writer_process) or expired)

    @contextlib.contextmanager
    def _renewing(self, upload_id: str, token: str) -> Iterator[None]:
        """Renew the claim's lease while this request holds it (whether bytes flow or the digest is checked), so
        the lease can be short and a writer that died on another host blocks its session only briefly.

        Most requests end long before the first renewal is due, so a request only enters its claim in this
        worker's table and takes it out again; one task (`_sweep`, running while any claim is held) renews the
        claims held for a while. A timer per request (a heap entry made and cancelled, 2 per small blob) cost
        about 3% of a small blob's event-loop samples."""
        self._held[token] = _Held(upload_id, asyncio.get_running_loop().time())
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            yield
        finally:
            del self._held[token]  # a renewal still running finds the claim released and changes nothing

    async def _sweep(self) -> None:
        """Every eighth of the lease, renew each claim not renewed (or made) for that long: none goes longer than
        a quarter of the lease without a renewal, as with a renewal task per claim. Ends once no claim is held."""
        loop = asyncio.get_running_loop()
        try:
            while self._held:
                interval = self._store.writer_lease / 8
                await asyncio.sleep(interval)
                now = loop.time()
                due = [(token, held) for token, held in self._held.items() if now - held.renewed >= interval]
                if due:
                    await asyncio.gather(*(self._renew(token, held, now) for token, held in due))
        finally:
            self._sweeper = None

    async def _renew(self, token: str, held: _Held, now: float) -> None:
        try:
            if not await self._store.renew_upload(held.upload_id, token):
                return  # the session was deleted: the writer finds out when it releases or links
        except Exception:  # the database is unreachable now: the lease leaves room for the next round
            return
        held.renewed = now

    async def _recover(self, upload: Upload) -> Upload:
        """Take over a session whose writer died mid-chunk and record the size storage holds, which is where the
        client must continue (the dead writer may have written any part of its chunk)."""
        token = _new_token()
        claimed = await self._store.claim_upload(
            upload.id, upload.repository, None, token, this_process(), upload.writer
        )
        if claimed is None:  # another request recovered it first, or the session ended
            current = await self._store.upload(upload.id)
            if current is None:
                raise _gone(upload.id)
            return current
        self._hashers.pop(upload.id, None)
        size = await self._stored_size(upload.id)
        if size is None and upload.size > 0:
            # its bytes are gone (a writer killed between publishing them and linking them): nothing to resume,
            # where an empty session would have taken a PATCH at 0 as a fresh start and a PUT as a wrong digest
            await self._discard(upload.id)
            raise _gone(upload.id)
        if not await self._store.release_upload(upload.id, token, size or 0):
            raise _gone(upload.id)
        return Upload(upload.id, upload.repository, size or 0)

    async def _stored_size(self, upload_id: str) -> int | None:
        """How many bytes the session holds in storage, as a writer continuing it sees them (a driver may keep them
        as something other than one readable object until the upload is committed); None when it holds none."""
        try:
            writer = await self._driver.writer(upload_path(upload_id), append=True)
        except DATA_MISSING:
            return None
        await writer.close()  # nothing written: the session stays as it was
        return writer.size

    async def _claim(self, repository: str, upload_id: str, start: int | None) -> tuple[Upload, str]:
        """Become the session's writer; RANGE_INVALID if `start` is not where its bytes end or another writes."""
        token = _new_token()
        claim = (_check_id(upload_id), repository, start, token, this_process())
        upload = await self._store.claim_upload(*claim)
        if upload is not None:
            return upload, token
        current = await self.get(repository, upload_id)  # BLOB_UPLOAD_UNKNOWN if there is no such session
        if current.writer is None and (start is None or start == current.size):  # a dead writer's claim, freed
            upload = await self._store.claim_upload(*claim)
            if upload is not None:
                return upload, token
            current = await self.get(repository, upload_id)
        if start is not None and start != current.size:
            message = f"chunk starts at {start}, upload has {current.size} bytes"
        else:
            # or one that could not record its end (the database was away then): its claim lapses on its own
            message = (
                "another request is writing to this upload, or one that ended could not release it yet "
                f"(then it is free again within {WRITER_LEASE_SECONDS:.0f} s)"
            )
        raise RegistryError(RANGE_INVALID, message, headers=progress_headers(current.size))

    async def append(
        self,
        repository: str,
        upload_id: str,
        chunks: AsyncIterable[bytes],
        start: int | None = None,
        arrived: bool = False,
    ) -> int:
        """Append a chunk; `start` (from Content-Range) must be where the stored bytes end. Returns the new size.

        If the body breaks off, what reached storage stays part of the session and its size is recorded, so the
        client can ask where to resume.

        A small body (at most `SMALL_CHUNK_MAX` bytes, a whole layer as skopeo and docker send it) that has
        `arrived` whole before the request claims anything is, on a driver that can append without awaiting,
        stored inside the one write that claims and releases the session (`_append_at_once`). Anything else, or a
        session that write cannot claim, goes the usual way: claim, write, release; so a body still arriving
        holds its claim from the start, as before, and a racing chunk finds the session busy.
        """
        upload_id = _check_id(upload_id)
        appender = self._driver.appender(upload_path(upload_id)) if arrived else None
        if appender is not None:
            received: list[bytes] = []
            body = aiter(chunks)
            try:
                whole = await _receive_small(body, received)
            except Exception as error:
                chunks = _broken_off(received, error)  # the usual path stores what arrived
            else:
                if whole:
                    size = await self._append_at_once(repository, upload_id, b"".join(received), start, appender)
                    if size is not None:
                        return size
                chunks = _chained(received, body)
        upload, token = await self._claim(repository, upload_id, start)
        with self._renewing(upload.id, token):
            return (await self._write(upload, token, chunks)).size

    async def _append_at_once(
        self, repository: str, upload_id: str, data: bytes, start: int | None, appender: Callable[[bytes, int], int]
    ) -> int | None:
        """A small chunk claimed, appended and released in one write (`append_small`): one round trip to the
        database writer where a claim, a storage call and a release took three. The new size; None when the session
        cannot be claimed now (another offset, a writer at work, a dead writer's claim to recover, no such session
        here), for the usual path to say why or to recover it.

        Safe against a killed writer as the claim is: the claim is the transaction's write lock, which a killed
        process gives up with its uncommitted transaction; bytes it appended beyond the recorded size are found
        by the next chunk (RANGE_INVALID at the size storage holds, as after a writer killed mid-chunk), or counted
        as appended if they are that very chunk again."""

        def append(claimed: int) -> tuple[bool, int]:
            found = appender(data, claimed)
            return (True, claimed + len(data)) if found == claimed else (False, found)

        try:
            claim = (upload_id, repository, start, _new_token(), this_process())
            result = await self._store.append_small(claim, append)
        except DATA_MISSING:
            raise _gone(upload_id) from None
        if result is None:
            return None
        claimed, appended, stored = result
        hasher = self._resumed_hasher(upload_id, claimed)
        if not appended:
            raise _stored_size_differs(Upload(upload_id, repository, claimed), stored)
        if hasher is not None:
            hasher.update(data)  # at most SMALL_CHUNK_MAX bytes: tens of microseconds
            self._keep(upload_id, hasher)
        return stored

    def _resumed_hasher(self, upload_id: str, size: int) -> Hasher | None:
        """The hash state to go on from at `size` bytes: the one this process kept if it is at that size, a fresh
        one for an empty session, else None (the bytes are hashed again when the upload finishes)."""
        hasher = self._hashers.pop(upload_id, None)
        if hasher is not None and hasher.size != size:
            hasher = None
        if hasher is None and size == 0:
            hasher = Hasher(HASH_ALGORITHM)
        return hasher

    async def _release(self, upload_id: str, token: str, size: int) -> None:
        """End this request's claim; BLOB_UPLOAD_UNKNOWN if the session was deleted while it wrote, whose data
        the deleting request left to this writer."""
        if not await self._store.release_upload(upload_id, token, size):
            self._hashers.pop(upload_id, None)
            await self._remove_data(upload_id)
            raise _gone(upload_id)

    async def _write(
        self, upload: Upload, token: str, chunks: AsyncIterable[bytes], *, finishing: bool = False
    ) -> _Stored:
        """Append `chunks` to a session claimed with `token`: its new size, and whether its bytes are durable.

        The claim is released at the size storage holds, even when the body breaks off, so the client can resume.
        A chunk is only flushed, as the session may go on elsewhere. When `finishing`, the chunk is the last one
        and, once written, the caller keeps the claim to finish the upload; a streamed one is then fsynced by the
        writer that wrote it (which saves opening the file again before publishing), a small one is left to the
        publishing move, which fsyncs the file together with its new name (one journal commit, where an fsync here
        and a rename after cost two).

        A body of at most `SMALL_CHUNK_MAX` bytes (a whole small layer, as skopeo and docker send it) is received
        first and stored in one driver call (`append_bytes`); a larger one streams through a writer.
        """
        stored = _Stored(upload.size)
        keep_claim = False
        try:
            hasher = self._resumed_hasher(upload.id, upload.size)
            received: list[bytes] = []
            body = aiter(chunks)  # one iterator, continued by the streamed path after the first chunks
            try:
                whole = await _receive_small(body, received)
            except BaseException:
                if received:  # what arrived stays part of the session, as a writer's close keeps it
                    with contextlib.suppress(Exception):
                        await self._append_small(upload, b"".join(received), hasher, stored)
                raise
            if whole:
                await self._append_small(upload, b"".join(received), hasher, stored)
            else:
                await self._append_streamed(upload, _chained(received, body), hasher, finishing, stored)
            keep_claim = finishing
        finally:
            if not keep_claim:
                try:
                    await self._release(upload.id, token, stored.size)
                except RegistryError:
                    raise
                except Exception:  # the database, away now: the claim is released once it is back
                    self._release_later(upload.id, token, stored.size)
                    raise
        return stored

    async def _release_now_or_later(self, upload_id: str, token: str, size: int = 0) -> None:
        """Release the claim of a closing PUT that failed with the session whole (holding `size` bytes: for an
        empty one, nothing of this body), once the database takes it (`_release_later`)."""
        try:
            await self._store.release_upload(upload_id, token, size)
        except Exception:
            self._release_later(upload_id, token, size)

    async def _end_published(self, upload_id: str) -> None:
        """End a session whose bytes were published (moved to the blob's path) but not linked (the database
        failed): nothing is left to resume, so the client's retry is told the session is unknown and starts again,
        where the blob, pinned and in place, is found (not a claim that looks busy for the lease, then a session
        that looks empty). If the database refuses this too, the claim lapses and the session, without data, is
        purged as old."""
        self._hashers.pop(upload_id, None)
        with contextlib.suppress(Exception):
            await self._store.delete_upload(upload_id)

    def _release_later(self, upload_id: str, token: str, size: int) -> None:
        """Try the release again every second while the claim's lease runs: else the session stayed claimed for
        the whole lease after an outage of seconds, every chunk refused as "another request is writing" (a probe,
        PostgreSQL stopped for 3 s). The token makes it a no-op once another writer took the session over."""

        async def retry() -> None:
            deadline = time.monotonic() + self._store.writer_lease
            while time.monotonic() < deadline:
                await asyncio.sleep(LATE_RELEASE_INTERVAL)
                with contextlib.suppress(Exception):
                    await self._store.release_upload(upload_id, token, size)
                    return

        task = asyncio.ensure_future(retry())
        self._late_releases.add(task)
        task.add_done_callback(self._late_releases.discard)

    async def _append_small(self, upload: Upload, data: bytes, hasher: Hasher | None, stored: _Stored) -> None:
        """Store a small body in one driver call, not fsynced: a finishing one is made durable by the publishing
        move, with its new name (see `_write`)."""
        try:
            found = await self._driver.append_bytes(upload_path(upload.id), data, upload.size)
        except DATA_MISSING:
            raise _gone(upload.id) from None
        if found != upload.size:
            stored.size = found
            raise _stored_size_differs(upload, found)
        stored.size = upload.size + len(data)
        if hasher is not None:
            hasher.update(data)  # at most SMALL_CHUNK_MAX bytes: tens of microseconds
            self._keep(upload.id, hasher)

    async def _append_streamed(
        self, upload: Upload, chunks: AsyncIterable[bytes], hasher: Hasher | None, finishing: bool, stored: _Stored
    ) -> None:
        """Stream a body through a writer, hashing as it goes."""
        try:
            writer = await self._driver.writer(upload_path(upload.id), append=upload.size > 0)
        except DATA_MISSING:
            raise _gone(upload.id) from None
        if writer.size != upload.size:
            stored.size = writer.size
            await writer.close()
            raise _stored_size_differs(upload, writer.size)
        complete = False
        try:
            await _pump(chunks, writer, hasher)
            complete = True
        finally:
            await (writer.commit() if complete and finishing else writer.close())
            stored.size, stored.synced = writer.size, complete and finishing
            if hasher is not None and hasher.size == writer.size:
                self._keep(upload.id, hasher)

    def _keep(self, upload_id: str, hasher: Hasher) -> None:
        if len(self._hashers) >= MAX_KEPT_HASHERS:
            self._hashers.pop(next(iter(self._hashers)))
        self._hashers[upload_id] = hasher

    async def complete(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        chunks: AsyncIterable[bytes] | None,
        start: int | None = None,
        events: EventsOf | None = None,
    ) -> None:
        """End a session: append the last chunk if any (at `start`, when the client said where), verify everything
        against `digest`, publish and link."""
        claimed, whole, moved = None, None, None
        if chunks is None:
            claimed, moved = await self._claim_verified(repository, upload_id, digest, events)
        elif not self._driver.moves_by_copy:
            claiming = self._claim_whole(repository, upload_id, digest, chunks, start, events)
            chunks, claimed, whole, moved = await claiming
        if claimed is not None:
            upload, token, pinned = claimed
            if moved is not None and moved.linked is not None:  # published and linked in the writer's thread
                self._hashers.pop(upload.id, None)
                if not moved.linked:
                    await self._remove_data(upload.id)
                    raise _gone(upload.id)  # deleted meanwhile: the verified blob stays unlinked, as in `_finish`
                return
        else:
            (upload, token), pinned = await self._claim(repository, upload_id, start), False
        with self._renewing(upload.id, token):
            if whole is not None:
                await self._complete_whole(upload, token, digest, whole, events, pinned, moved)
                return
            if chunks is not None and upload.size == 0 and self._driver.moves_by_copy:
                await self._complete_in_place(upload, token, digest, chunks, events)
                return
            stored = _Stored(upload.size)
            if chunks is not None:  # nothing pinned yet: only a PUT without a body or a whole one pins early
                stored = await self._write(upload, token, chunks, finishing=True)
            await self._finish(
                upload.repository, upload.id, stored.size, digest, stored.synced, token, events, pinned, moved
            )

    async def _claim_whole(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        chunks: AsyncIterable[bytes],
        start: int | None,
        events: EventsOf | None,
    ) -> tuple[AsyncIterable[bytes], tuple[Upload, str, bool] | None, bytes | None, _Moved | None]:
        """For a PUT whose small body is the whole blob (POST, then PUT with the body): receive the body first, and
        if its bytes are `digest`, claim the empty session and pin the blob in one write, as `_claim_verified` does
        for a PUT without a body (a claim, then a pin after the write, were two). The body for the usual path; the
        claim with its pin, the blob's bytes (for `_complete_whole`) and what publishing them did already, or None for
        each of those when that does not apply (a larger body, another digest, a session that holds bytes or is
        busy): then claim as usual. Verified
        before pinned: the pin's size is that of the bytes hashed, which are the ones then written, and the claim
        holds only if the session is still empty. Where the driver can write without awaiting (`Base.putter`), the
        blob is written at its path in the writer's thread right after that commit, and a new one linked in the
        writer's next batch (`_Publishing`, as a PUT without a body): the last of the four is then what that did.

        A body that breaks off goes to the usual path, which claims and stores what arrived, as before; a
        cancelled request leaves the session as it was."""
        received: list[bytes] = []
        body = aiter(chunks)
        try:
            whole = await _receive_small(body, received)
        except Exception as error:
            return _broken_off(received, error), None, None, None
        if not whole:
            return _chained(received, body), None, None, None
        again = _chained(received, body)  # the same bytes (the body has ended), for the usual path
        upload_id = _check_id(upload_id)
        kept = self._hashers.get(upload_id)
        if start not in (None, 0) or (kept is not None and kept.size != 0):
            return again, None, None, None  # a session with bytes in it: hashed only with them
        data = b"".join(received)
        hasher = Hasher(digest.algorithm)
        hasher.update(data)  # at most SMALL_CHUNK_MAX bytes: tens of microseconds
        if not data or hasher.digest() != digest:
            return again, None, None, None  # the usual path answers DIGEST_INVALID (and ends the session)
        putter = self._driver.putter(blob_path(digest), data)
        link = self._linker(digest, events, len(data))
        publish = None if putter is None else _Publishing(putter, link, moves_session=False)
        claimed, moved = await self._claim_pinned(repository, upload_id, digest, 0, publish, len(data))
        if claimed is None:
            return again, None, None, None
        return again, claimed, data, moved

    async def _complete_whole(
        self,
        upload: Upload,
        token: str,
        digest: Digest,
        data: bytes,
        events: EventsOf | None,
        pinned: bool,
        put: _Moved | None,
    ) -> None:
        """Publish a blob verified whole in `_claim_whole` straight at its path (`put_if_absent`: one storage call,
        durable when it returns, where storing it in the upload area and moving it were two), then link it.

        The upload area is never written: if the blob cannot be placed, the claim is released and the session is
        as it was, empty, for the client to send its PUT again (as `_complete_in_place`). A file found at the path
        counts as stored only if the database knows the blob, as in `_place`. Bytes a killed writer may have left
        in the session's storage beyond its recorded size (none) are not read; once the session ends they are
        data of a session the database no longer knows, which garbage collection purges. `put`: that storage call
        was made already (`_claim_whole`)."""
        final = blob_path(digest)
        try:
            if not pinned:
                await self._pin(digest, len(data), upload.id)
                pinned = True
            written = put.result() if put is not None else await self._driver.put_if_absent(final, data)
            if not written and await self._store.known_blob_size(digest) is None:
                await self._driver.put_content(final, data)  # what a failed upload or an unfinished collection left
        except BaseException:
            if pinned:
                with contextlib.suppress(Exception):  # else the pin expires on its own
                    await self._store.unpin_blob(digest, upload.id)
            await self._release_now_or_later(upload.id, token)
            raise
        records = events(len(data)) if events is not None else ()
        await self._link_placed(upload, token, digest, len(data), records)

    async def _link_placed(
        self, upload: Upload, token: str, digest: Digest, size: int, records: Sequence[EventRecord]
    ) -> None:
        """Link a blob placed without writing the (empty) session: if the database fails, the claim is released
        and the session is as it was, for the client to send its PUT again."""
        try:
            linked = await self._store.finish_upload(upload.id, upload.repository, digest, size, token, records)
        except BaseException:
            await self._release_now_or_later(upload.id, token)
            raise
        if not linked:
            raise _gone(upload.id)  # deleted meanwhile: the verified blob stays unlinked, as on the usual path

    async def _complete_in_place(
        self, upload: Upload, token: str, digest: Digest, chunks: AsyncIterable[bytes], events: EventsOf | None
    ) -> None:
        """A session's whole blob in its closing PUT, on a driver whose `move` copies: see `_write_in_place`. A body
        that breaks off leaves the session as it was, empty: the client sends its PUT again."""
        try:
            size = await self._write_in_place(digest, chunks, upload.id)
        except _Mismatch:
            await self._discard(upload.id)  # as on the usual path: a wrong digest ends the session
            raise RegistryError(DIGEST_INVALID, {"digest": str(digest)}) from None
        except BaseException:
            await self._release_now_or_later(upload.id, token)
            raise
        records = events(size) if events is not None else ()
        await self._link_placed(upload, token, digest, size, records)

    async def _write_in_place(self, digest: Digest, chunks: AsyncIterable[bytes], pin_id: str) -> int:
        """Write a blob received whole straight to its path, on a driver whose `move` copies the bytes (S3), and
        return its size. `stream_write` publishes only if the chunks end without an error, and they end in one
        (`_Mismatch`) unless the bytes matched `digest`; the blob is pinned (as `pin_id`) before it is published. So
        nothing unverified is ever visible, as on the usual path, and the blob is never copied: writing it to the
        upload area, a server-side copy of every byte and a delete are saved."""
        hasher = Hasher(digest.algorithm)  # the client named it before the first byte (sha256 or sha512)
        pinned = False

        async def verified() -> AsyncIterator[bytes]:
            nonlocal pinned
            hashing: asyncio.Future[None] | None = None
            async for chunk in chunks:
                if hashing is not None:
                    await hashing
                hashing = _hash_chunk(hasher, chunk)  # a large one hashed while the driver takes it
                yield chunk
            if hashing is not None:
                await hashing
            if hasher.digest() != digest:
                raise _Mismatch
            await self._pin(digest, hasher.size, pin_id)
            pinned = True

        try:
            return await self._driver.stream_write(blob_path(digest), verified())
        except BaseException:
            if pinned:
                with contextlib.suppress(Exception):  # else the pin expires on its own
                    await self._store.unpin_blob(digest, pin_id)
            raise

    async def _claim_verified(
        self, repository: str, upload_id: str, digest: Digest, events: EventsOf | None
    ) -> tuple[tuple[Upload, str, bool] | None, _Moved | None]:
        """For a PUT without a body: when the session's bytes are `digest` already, claim the session at exactly
        the hashed size and pin the blob in one write, instead of a claim now and a pin after verifying. No claim
        (None, None) when that does not apply (another digest, the session changed or is busy, its bytes cannot be
        read before they are committed): then claim as usual.

        The hash is the running one this process kept from the PATCH that wrote the session last, or else (the
        PUT came to another process than its PATCH: half of a skopeo push's blobs) the hash of the bytes storage
        holds for a small session, read without a claim. Either way the pin still comes only after verification:
        a session only grows, so the claim at exactly the hashed size holds only if its bytes are still those
        hashed (no writer since, none now).

        Where the driver can move without awaiting (`Base.mover`), the bytes are published in the same trip to the
        database writer, right after the claim and pin are committed: what `_finish` would do next anyway (the
        digest is verified already), one hand-off to a thread and back fewer. The second of the pair: that move's
        outcome, for `_place`; for a new blob (the common case) it also says that the blob was linked in the
        writer's next batch, with `events` (see `_Publishing`), and nothing is left to do. Where it can also read
        without awaiting (`Base.unfinished_reader`), a small session
        another process wrote is read and hashed in that same trip, inside the claim's transaction (as a PATCH's
        small chunk is appended inside its own), before the claim: one more hand-off fewer."""
        upload_id = _check_id(upload_id)
        path = upload_path(upload_id)
        mover = self._driver.mover(path, blob_path(digest), sync_source=True)
        publish = None if mover is None else _Publishing(mover, self._linker(digest, events), moves_session=True)
        hasher = self._hashers.get(upload_id)
        if hasher is None and mover is not None:
            reader = self._driver.unfinished_reader(path, SMALL_CHUNK_MAX)
            if reader is not None:
                verified = _Verified(reader, digest)
                claimed, moved = await self._claim_pinned(repository, upload_id, digest, verified, publish)
                if verified.hasher is not None:  # read there: verified, and claimed if they were `digest`
                    if claimed is not None and (moved is None or moved.linked is None):
                        self._keep(upload_id, verified.hasher)  # for `_finish`, which verifies with it
                    return claimed, moved
        if hasher is None:
            hasher = await self._hash_unfinished(upload_id, digest.algorithm)
        if hasher is None or hasher.algorithm != digest.algorithm or hasher.digest() != digest:
            return None, None
        claimed, moved = await self._claim_pinned(repository, upload_id, digest, hasher.size, publish)
        if claimed is not None and (moved is None or moved.linked is None):
            self._keep(upload_id, hasher)  # for `_finish`, which verifies with it
        return claimed, moved

    def _linker(self, digest: Digest, events: EventsOf | None, size: int | None = None) -> _Link:
        """The link of a session's blob of `size` bytes (None: the size claimed), for `_Publishing` to write in
        the writer's thread: its events are made there, in the request's context (they name the request and its
        client)."""
        context = contextvars.copy_context() if events is not None else None

        def link(upload: Upload) -> Callable[[], bool]:
            blob_size = upload.size if size is None else size
            records = () if events is None or context is None else context.run(events, blob_size)
            finish = self._store.sync.finish_upload
            return partial(finish, upload.id, upload.repository, digest, blob_size, upload.writer, records)

        return link

    async def _claim_pinned(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        size: int | _Verified,
        publish: _Publishing | None,
        blob_size: int | None = None,
    ) -> tuple[tuple[Upload, str, bool] | None, _Moved | None]:
        """Claim the session at `size` (or at the size read and verified in the claim's transaction) with the
        blob's pin (of `blob_size` bytes when the blob is more than the session holds: a body received whole),
        then publish it in the writer's thread (`_Publishing`): the claim, and what publishing did (None: nothing
        was tried)."""
        token = _new_token()
        moved: _Moved | None = None
        if publish is None:
            upload, pinned = await self._store.claim_upload_pinned(
                upload_id, repository, size, token, this_process(), digest, blob_size
            )
        else:
            try:
                (upload, pinned), moved = await self._store.claim_upload_pinned_then(
                    publish, upload_id, repository, size, token, this_process(), digest, blob_size
                )
            except BaseException:
                if publish.placed:  # the link failed: the claim is ended, not left to lapse with the session busy
                    if publish.moves_session:
                        await self._end_published(upload_id)
                    else:
                        await self._release_now_or_later(upload_id, token)
                raise
        if upload is None:
            return None, None
        return (upload, token, pinned), moved

    async def _hash_unfinished(self, upload_id: str, algorithm: str) -> Hasher | None:
        """The hash of a small session's bytes as storage holds them now (see `_claim_verified`), if the driver can
        read them before they are committed."""
        data = await self._driver.read_unfinished(upload_path(upload_id), UNCLAIMED_HASH_MAX)
        if data is None:
            return None
        hasher = Hasher(algorithm)
        if (hashing := _hash_chunk(hasher, data)) is not None:
            await hashing
        return hasher

    async def put_whole(
        self,
        repository: str,
        digest: Digest,
        chunks: AsyncIterable[bytes],
        events: EventsOf | None = None,
        upload_id: str | None = None,
    ) -> None:
        """A monolithic upload (no session row): the whole blob in one request, verified before it is visible.
        `upload_id` names its data in the upload area, which others may read while it grows (the pull-through
        cache); without one, a driver whose `move` copies gets the blob straight at its path (`_write_in_place`)."""
        if upload_id is None and self._driver.moves_by_copy:
            upload_id = new_upload_id(flat=False)  # names the pin only: nothing is written to the upload area
            try:
                size = await self._write_in_place(digest, chunks, upload_id)
            except _Mismatch:
                raise RegistryError(DIGEST_INVALID, {"digest": str(digest)}) from None
            records = events(size) if events is not None else ()
            await self._store.finish_upload(upload_id, repository, digest, size, None, records)
            return
        upload_id = upload_id or new_upload_id(not self._driver.moves_by_copy)
        writer = await self._driver.writer(upload_path(upload_id))
        hasher = Hasher(HASH_ALGORITHM)
        try:
            await _pump(chunks, writer, hasher)
            await writer.commit()
        except BaseException:
            await writer.cancel()
            await self._remove_data(upload_id)
            raise
        self._keep(upload_id, hasher)
        await self._finish(repository, upload_id, writer.size, digest, True, None, events)

    async def _finish(
        self,
        repository: str,
        upload_id: str,
        size: int,
        digest: Digest,
        synced: bool,
        token: str | None = None,
        events: EventsOf | None = None,
        pinned: bool = False,
        moved: _Moved | None = None,
    ) -> None:
        """Verify the session's bytes, publish the blob and link it; the session is cancelled on any error.

        `token` is the claim of a session's writer: a session deleted meanwhile is BLOB_UPLOAD_UNKNOWN and its blob
        stays unlinked (the bytes may have been published already; they are verified, and unreachable).
        `pinned`: the claim pinned the blob already (`_claim_verified`); `moved`: and published it too.
        """
        hasher = self._hashers.pop(upload_id, None)
        try:
            if hasher is None or hasher.size != size or hasher.algorithm != digest.algorithm:
                if not synced:  # the bytes are readable once committed (S3 completes its multipart upload)
                    await self._sync(upload_path(upload_id))
                    synced = True
                hasher = await self._rehash(upload_id, size, digest.algorithm)
            if hasher.digest() != digest:
                raise RegistryError(DIGEST_INVALID, {"digest": str(digest)})
        except BaseException:
            if pinned:
                with contextlib.suppress(Exception):  # else the pin expires on its own
                    await self._store.unpin_blob(digest, upload_id)
            await self._discard(upload_id)
            raise
        if not pinned:
            try:
                await self._pin(digest, hasher.size, upload_id)
            except BaseException:
                # the session is kept whole, its claim released at its size (its last chunk in), so the client's
                # retry finds it free and finishes it, without hashing it again here
                self._keep(upload_id, hasher)
                if token is not None:
                    await self._release_now_or_later(upload_id, token, size)
                raise
        try:
            stored = await self._place(upload_id, digest, hasher.size, synced, moved)
        except BaseException:
            with contextlib.suppress(Exception):  # else the pin expires on its own
                await self._store.unpin_blob(digest, upload_id)
            await self._discard(upload_id)
            raise
        records = events(hasher.size) if events is not None else ()
        try:
            linked = await self._store.finish_upload(upload_id, repository, digest, hasher.size, token, records)
        except BaseException:
            await self._end_published(upload_id)
            raise
        if stored or not linked:
            await self._remove_data(upload_id)  # a published upload's data and directory moved away already
        if not linked:
            raise _gone(upload_id)

    async def _pin(self, digest: Digest, size: int, upload_id: str) -> None:
        """Keep garbage collection from deleting the blob (an earlier copy of it, or the file about to be published)
        until `finish_upload` links it; wait while a collector finishes deleting an earlier copy."""
        deadline = time.monotonic() + PIN_WAIT_SECONDS
        while not await self._store.pin_blob(digest, size, upload_id):
            if time.monotonic() > deadline:
                raise blob_being_deleted()
            await asyncio.sleep(0.05)

    async def _place(self, upload_id: str, digest: Digest, size: int, synced: bool, moved: _Moved | None) -> bool:
        """Put the verified upload at its blob's path, durable (made so here unless `synced`); True when a verified
        copy was in place already, which the new bytes, verified too, need not replace.

        A new blob (the common case) takes one storage call (`move_if_absent`) and no database read; a file found
        at the path counts as stored only if the database knows the blob (else it is what a failed upload or an
        unfinished collection left, and is replaced). `moved`: that storage call was made already."""
        path = upload_path(upload_id)
        final = blob_path(digest)
        try:
            if moved is not None:
                if moved.result():
                    return False
            elif await self._driver.move_if_absent(path, final, sync_source=not synced):
                return False
        except DATA_MISSING:
            if size:
                raise _gone(upload_id) from None
            await self._driver.put_content(final, b"")  # nothing was ever written: the empty blob
            return False
        if await self._store.known_blob_size(digest) is not None:
            return True
        if not synced:
            await self._sync(path)
        await self._publish(upload_id, final, size)
        return False

    async def _sync(self, path: str) -> None:
        try:
            writer = await self._driver.writer(path, append=True)
        except DATA_MISSING:
            return  # nothing was ever written, or the data is gone: publishing tells which
        await writer.commit()

    async def _publish(self, upload_id: str, final: str, size: int) -> None:
        try:
            await self._driver.move(upload_path(upload_id), final)
        except DATA_MISSING:
            if size:
                raise _gone(upload_id) from None
            await self._driver.put_content(final, b"")  # nothing was ever written: the empty blob

    async def _rehash(self, upload_id: str, size: int, algorithm: str) -> Hasher:
        """Hash the session's stored bytes (the finishing PUT came to a process that did not keep their running
        hash): each slice hashed while the next one is read, not after it, so the client's wait is about the
        longer of the two rather than their sum."""
        hasher = Hasher(algorithm)
        hashing: asyncio.Future[None] | None = None
        try:
            async for chunk in self._driver.stream_read(upload_path(upload_id)):
                if hashing is not None:
                    await hashing  # in order: the previous slice is hashed before this one
                hashing = _hash_chunk(hasher, chunk)  # a small session's at once: no hop
            if hashing is not None:
                await hashing
        except DATA_MISSING:
            if size:
                raise _gone(upload_id) from None
            # else a session nothing was ever written to: the empty blob
        return hasher

    async def cancel(self, upload: Upload) -> None:
        """Delete the session at once, even while a request writes to it: that writer then finds it gone
        (BLOB_UPLOAD_UNKNOWN) and removes the data itself, so no file vanishes under a live writer. Data storage
        cannot remove now (S3 unreachable) is left to upload purging, which removes data no session names once it
        is as old as `uploadpurging.age`: the session is gone, so the answer says so, where a 503 asked the client
        to retry a DELETE that then answered 404."""
        deleted = await self._store.delete_upload(upload.id)
        if deleted is None:
            raise _gone(upload.id)
        if deleted.writer is None or self._abandoned(deleted):
            self._hashers.pop(upload.id, None)
            try:
                await self._remove_data(upload.id)
            except (exceptions.UnspecifiedError, OSError) as e:  # unreachable, or some objects not removed
                log.warning("upload %s deleted; storage kept its data, left to upload purging: %s", upload.id, e)

    async def _discard(self, upload_id: str) -> None:
        self._hashers.pop(upload_id, None)
        await self._store.delete_upload(upload_id)
        await self._remove_data(upload_id)

    async def _remove_data(self, upload_id: str) -> None:
        try:
            await self._driver.remove(upload_area(upload_id))
        except DATA_MISSING:
            pass
