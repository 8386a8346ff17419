"""Blob upload sessions: bytes appended in the driver under `uploads/<id>/data`, sessions in the metadata store.

Any process can continue a session another began. A request writing to a session first claims it in the metadata
store (which also checks the offset), so racing chunks cannot interleave. Each process keeps the running hash of
the sessions it served while the stored size still matches it; otherwise the stored bytes are hashed again before
the digest is checked. A blob becomes visible only after its bytes matched the digest the client announced and
were made durable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, Hasher, blob_path
from docker_registry.core.driver import Base, Writer

from .errors import BLOB_UPLOAD_INVALID, BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, RegistryError
from .store.metadata import MetadataStore, Upload

HASH_ALGORITHM = "sha256"
MAX_KEPT_HASHERS = 1000


def upload_path(upload_id: str) -> str:
    return f"uploads/{upload_id}/data"


def progress_headers(size: int) -> dict[str, str]:
    return {"Range": f"0-{max(size - 1, 0)}"}


def _check_id(upload_id: str) -> str:
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id[:100]}) from None


async def _pump(chunks: AsyncIterable[bytes], writer: Writer, hasher: Hasher | None) -> None:
    """Write and hash each chunk while the next one is received: the three overlap, one of each in flight."""
    hashing: asyncio.Future[None] | None = None
    writing: asyncio.Future[int] | None = None
    try:
        async for chunk in chunks:
            if hashing is not None:
                await hashing
            if writing is not None:
                await writing
            if hasher is not None:
                hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, chunk))
            writing = asyncio.ensure_future(writer.write(chunk))
    finally:
        # settle both before the caller reads sizes or closes the writer, even when the body broke off
        pending = [f for f in (hashing, writing) if f is not None]
        if pending:
            results = await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
            for result in results:
                if isinstance(result, BaseException):
                    raise result


class Uploads:
    def __init__(self, store: MetadataStore, driver: Base) -> None:
        self._store = store
        self._driver = driver
        self._hashers: dict[str, Hasher] = {}

    async def start(self, repository: str) -> Upload:
        upload = Upload(str(uuid.uuid4()), repository, 0)
        await asyncio.to_thread(self._store.create_upload, upload.id, repository)
        return upload

    async def get(self, repository: str, upload_id: str) -> Upload:
        upload = await asyncio.to_thread(self._store.upload, _check_id(upload_id))
        if upload is None or upload.repository != repository:
            raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id})
        return upload

    async def _claim(self, repository: str, upload_id: str, start: int | None) -> tuple[Upload, str]:
        """Become the session's writer; RANGE_INVALID if `start` is not where its bytes end or another writes."""
        token = str(uuid.uuid4())
        upload = await asyncio.to_thread(self._store.claim_upload, _check_id(upload_id), repository, start, token)
        if upload is not None:
            return upload, token
        current = await self.get(repository, upload_id)  # BLOB_UPLOAD_UNKNOWN if there is no such session
        if start is not None and start != current.size:
            message = f"chunk starts at {start}, upload has {current.size} bytes"
        else:
            message = "another request is writing to this upload"
        raise RegistryError(RANGE_INVALID, message, headers=progress_headers(current.size))

    async def append(
        self, repository: str, upload_id: str, chunks: AsyncIterable[bytes], start: int | None = None
    ) -> int:
        """Append a chunk; `start` (from Content-Range) must be where the stored bytes end. Returns the new size.

        If the body breaks off, what reached storage stays part of the session and its size is recorded, so the
        client can ask where to resume.
        """
        upload, token = await self._claim(repository, upload_id, start)
        written = [upload.size]
        try:
            await self._write(upload, chunks, written)
        finally:
            await asyncio.to_thread(self._store.release_upload, upload.id, token, written[0])
        return written[0]

    async def _write(
        self, upload: Upload, chunks: AsyncIterable[bytes], written: list[int], durable: bool = False
    ) -> None:
        """Append `chunks` to a claimed session; `written[0]` follows the stored size even if the body breaks.

        A chunk is only flushed, as the session may go on elsewhere; the last one (`durable`) is fsynced through
        the writer that wrote it, which saves opening the file again before publishing.
        """
        try:
            writer = await self._driver.writer(upload_path(upload.id), append=upload.size > 0)
        except exceptions.FileNotFoundError:
            raise RegistryError(BLOB_UPLOAD_INVALID, "the upload's data is gone") from None
        if writer.size != upload.size:
            # Only after a process died mid-chunk: record what storage holds, so the client resumes from there.
            written[0] = writer.size
            await writer.close()
            raise RegistryError(
                RANGE_INVALID,
                f"the upload holds {writer.size} bytes, not {upload.size}",
                headers=progress_headers(writer.size),
            )
        hasher = self._hashers.pop(upload.id, None)
        if hasher is not None and hasher.size != writer.size:
            hasher = None
        if hasher is None and writer.size == 0:
            hasher = Hasher(HASH_ALGORITHM)
        complete = False
        try:
            await _pump(chunks, writer, hasher)
            complete = True
        finally:
            await (writer.commit() if complete and durable else writer.close())
            written[0] = writer.size
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
    ) -> None:
        """End a session: append the last chunk if any (at `start`, when the client said where), verify everything
        against `digest`, publish and link."""
        upload, token = await self._claim(repository, upload_id, start)
        written = [upload.size]
        if chunks is not None:
            try:
                await self._write(upload, chunks, written, durable=True)
            except BaseException:
                await asyncio.to_thread(self._store.release_upload, upload.id, token, written[0])
                raise
        await self._finish(upload.repository, upload.id, written[0], digest, synced=chunks is not None)

    async def put_whole(self, repository: str, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        """A monolithic upload (no session row): the whole blob in one request, verified before it is visible."""
        upload_id = str(uuid.uuid4())
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
        await self._finish(repository, upload_id, writer.size, digest, synced=True)

    async def _finish(self, repository: str, upload_id: str, size: int, digest: Digest, synced: bool) -> None:
        """Verify the session's bytes, publish the blob and link it; the session is cancelled on any error."""
        path = upload_path(upload_id)
        hasher = self._hashers.pop(upload_id, None)
        try:
            if hasher is None or hasher.size != size or hasher.algorithm != digest.algorithm:
                hasher = await self._rehash(path, digest.algorithm)
            if hasher.digest() != digest:
                raise RegistryError(DIGEST_INVALID, {"digest": str(digest)})
            stored = await self._already_stored(digest)
            if not stored:
                if not synced:
                    await self._sync(path)
                await self._publish(path, blob_path(digest), hasher.size)
        except BaseException:
            await self._discard(upload_id)
            raise
        await asyncio.to_thread(self._store.finish_upload, upload_id, repository, str(digest), hasher.size)
        if stored:
            await self._remove_data(upload_id)  # a published upload's data and directory moved away already

    async def _already_stored(self, digest: Digest) -> bool:
        """True when a verified copy is in place already: the new bytes, verified too, need not replace it."""
        if await asyncio.to_thread(self._store.known_blob_size, str(digest)) is None:
            return False
        try:
            await self._driver.stat(blob_path(digest))
        except exceptions.FileNotFoundError:
            return False
        return True

    async def _sync(self, path: str) -> None:
        try:
            writer = await self._driver.writer(path, append=True)
        except exceptions.FileNotFoundError:
            return  # nothing was ever written
        await writer.commit()

    async def _publish(self, path: str, final: str, size: int) -> None:
        try:
            await self._driver.move(path, final)
        except exceptions.FileNotFoundError:
            if size:
                raise
            await self._driver.put_content(final, b"")  # nothing was ever written: the empty blob

    async def _rehash(self, path: str, algorithm: str) -> Hasher:
        hasher = Hasher(algorithm)
        try:
            async for chunk in self._driver.stream_read(path):
                await asyncio.to_thread(hasher.update, chunk)
        except exceptions.FileNotFoundError:
            pass  # a session nothing was ever written to: the empty blob
        return hasher

    async def cancel(self, upload: Upload) -> None:
        await self._discard(upload.id)

    async def _discard(self, upload_id: str) -> None:
        self._hashers.pop(upload_id, None)
        await asyncio.to_thread(self._store.delete_upload, upload_id)
        await self._remove_data(upload_id)

    async def _remove_data(self, upload_id: str) -> None:
        try:
            await self._driver.remove(f"uploads/{upload_id}")
        except exceptions.FileNotFoundError:
            pass
