"""Blob upload sessions: bytes appended in the driver under `uploads/<id>/data`, sessions in the metadata store.

Any process can continue a session another began. Each process keeps the running hash of sessions it served while
the stored size still matches it; otherwise the stored bytes are hashed again before the digest is checked.
A blob becomes visible only after its bytes matched the digest the client announced.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, Hasher, blob_path
from docker_registry.core.driver import Base, Writer

from .errors import BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, RegistryError
from .store.metadata import MetadataStore, Upload

HASH_ALGORITHM = "sha256"
MAX_KEPT_HASHERS = 1000


def upload_path(upload_id: str) -> str:
    return f"uploads/{upload_id}/data"


def _check_id(upload_id: str) -> str:
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id[:100]}) from None


async def _pump(chunks: AsyncIterable[bytes], writer: Writer, hasher: Hasher | None) -> None:
    """Write and hash each chunk; the hash of one chunk runs in a thread while the next one is received."""
    hashing: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            if hasher is not None:
                if hashing is not None:
                    await hashing
                hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, chunk))
            await writer.write(chunk)
    finally:
        if hashing is not None:
            await asyncio.shield(hashing)


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

    async def append(self, upload: Upload, chunks: AsyncIterable[bytes], start: int | None = None) -> int:
        """Append a chunk; `start` (from Content-Range) must be where the stored bytes end. Returns the new size.

        If the body breaks off, what reached storage stays part of the session and its size is recorded, so the
        client can ask where to resume.
        """
        if start is not None and start != upload.size:
            raise RegistryError(
                RANGE_INVALID,
                f"chunk starts at {start}, upload has {upload.size} bytes",
                headers=_progress_headers(upload.size),
            )
        writer = await self._driver.writer(upload_path(upload.id), append=upload.size > 0)
        hasher = self._hashers.pop(upload.id, None)
        if writer.size != upload.size or (hasher is not None and hasher.size != writer.size):
            hasher = None
        if hasher is None and writer.size == 0:
            hasher = Hasher(HASH_ALGORITHM)
        try:
            await _pump(chunks, writer, hasher)
        finally:
            await writer.commit()
            size = writer.size
            await asyncio.to_thread(self._store.set_upload_size, upload.id, size)
            if hasher is not None and hasher.size == size:
                self._keep(upload.id, hasher)
        return size

    def _keep(self, upload_id: str, hasher: Hasher) -> None:
        if len(self._hashers) >= MAX_KEPT_HASHERS:
            self._hashers.pop(next(iter(self._hashers)))
        self._hashers[upload_id] = hasher

    async def finish(self, repository: str, upload_id: str, size: int, digest: Digest, known_size: int | None) -> None:
        """Verify the session's bytes against `digest`, publish the blob and link it; cancel the session on error."""
        path = upload_path(upload_id)
        hasher = self._hashers.pop(upload_id, None)
        try:
            if hasher is None or hasher.size != size or hasher.algorithm != digest.algorithm:
                hasher = await self._rehash(path, digest.algorithm)
            if hasher.digest() != digest:
                raise RegistryError(DIGEST_INVALID, {"digest": str(digest)})
            if known_size is None:
                await self._publish(path, blob_path(digest), hasher.size)
        except BaseException:
            await self._discard(upload_id)
            raise
        await asyncio.to_thread(self._store.finish_upload, upload_id, repository, str(digest), hasher.size)
        await self._remove_data(upload_id)

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

    async def write_whole(self, upload_id: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a monolithic upload's body (no session row): the blob is then published by `finish`."""
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
        return writer.size

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


def _progress_headers(size: int) -> dict[str, str]:
    return {"Range": f"0-{max(size - 1, 0)}"}
