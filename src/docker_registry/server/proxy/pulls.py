"""Last-pulled times of cached content, for garbage collection: noted on each pull served through the cache,
written in batches by a background task so a pull never waits for the database, and at most once a minute per
manifest or blob per worker so a busy cache does not turn every pull into a write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from docker_registry.core.digest import Digest

from ..store.facade import AsyncMetadataStore

log = logging.getLogger(__name__)

FLUSH_EVERY = 5.0
RECORD_EVERY = 60.0
"""Seconds during which a repeated pull of the same content is not recorded again (GC works in hours or days)."""
MAX_REMEMBERED = 100_000


class PullRecorder:
    def __init__(self, store: AsyncMetadataStore) -> None:
        self._store = store
        self._pending: dict[tuple[str, Digest], tuple[str, float]] = {}
        self._recorded: dict[tuple[str, Digest], float] = {}

    def note(self, repository: str, digest: Digest, kind: str) -> None:
        now = time.time()
        key = (repository, digest)
        if now - self._recorded.get(key, 0.0) < RECORD_EVERY:
            return
        if len(self._recorded) >= MAX_REMEMBERED:
            self._recorded.clear()
        self._recorded[key] = now
        self._pending[key] = (kind, now)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            rows = [(repository, digest, kind, at) for (repository, digest), (kind, at) in pending.items()]
            await self._store.write(self._store.sync.record_pulls, rows)

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                try:
                    await self.flush()
                except Exception as exc:  # the database is away: these times are only a hint for GC
                    log.warning("could not record pulls of cached content: %s", exc)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(Exception):
                await self.flush()
