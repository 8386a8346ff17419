"""Reading blobs through any storage driver to check them against their digest, and copying them between drivers
verified: streamed in the driver's slices, hashed in threads (hashlib releases the GIL), never held whole.

`in_parallel` runs a few of these at once: reads of one blob wait on the disk or the network while another's
bytes are hashed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, Hasher
from docker_registry.core.driver import Base

from .console import Phase

T = TypeVar("T")


async def hash_object(driver: Base, path: str, algorithm: str, phase: Phase | None = None) -> Hasher:
    """The digest and size of what `driver` holds at `path` (bytes read counted in `phase`); FileNotFoundError
    when it holds nothing there."""
    hasher = Hasher(algorithm)
    async for chunk in driver.stream_read(path):
        await asyncio.to_thread(hasher.update, chunk)
        if phase is not None:
            phase.add_bytes(len(chunk))
    return hasher


class ContentMismatch(Exception):
    def __init__(self, expected: Digest, actual: Hasher) -> None:
        super().__init__(f"content hashes to {actual.digest()} ({actual.size} bytes), not {expected}")
        self.actual = actual


async def copy_verified(source: Base, src: str, target: Base, dst: str, digest: Digest, phase: Phase) -> int:
    """Copy `src` of `source` to `dst` of `target` only if its bytes hash to `digest`; return the size.

    The bytes land in the target's upload area first and are moved into place once they matched, so `dst` never
    holds unverified bytes, even for a moment, and a copy cut short leaves nothing under `dst`."""
    staging_dir = f"uploads/import-{uuid.uuid4()}"
    staging = f"{staging_dir}/data"
    hasher = Hasher(digest.algorithm)

    async def hashed() -> AsyncIterator[bytes]:
        async for chunk in source.stream_read(src):
            await asyncio.to_thread(hasher.update, chunk)
            phase.add_bytes(len(chunk))
            yield chunk

    try:
        await target.stream_write(staging, hashed())
        if hasher.digest() != digest:
            raise ContentMismatch(digest, hasher)
        await target.move(staging, dst)
    finally:
        try:
            await target.remove(staging_dir)
        except exceptions.FileNotFoundError:
            pass
    return hasher.size


async def in_parallel(items: Iterable[T] | AsyncIterable[T], work: Callable[[T], Awaitable[None]], jobs: int) -> None:
    """Run `work` on every item, `jobs` at a time; items are drawn as workers free up, so a store of any size
    costs `jobs` tasks, not one per item. The first error stops every worker and is raised."""
    source: AsyncIterator[T] = _aiter(items)
    lock = asyncio.Lock()

    async def worker() -> None:
        while True:
            async with lock:  # one draw at a time: an async generator may not be advanced concurrently
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    return
            await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, jobs)):
                group.create_task(worker())
    except BaseExceptionGroup as errors:  # the callers handle one error, as from a plain loop
        raise errors.exceptions[0] from None


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
