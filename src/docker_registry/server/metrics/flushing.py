"""Tallies kept in plain numbers by a worker and added to the shared metrics once a second: the request path pays
an addition, not a write to prometheus_client's multiprocess files (see requests.py)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

FLUSH_INTERVAL = 1.0


class Flushed(abc.ABC):
    @abc.abstractmethod
    def flush(self) -> None:
        """Add what was tallied since the last flush to the shared metrics."""

    @contextlib.asynccontextmanager
    async def flushing(self, interval: float = FLUSH_INTERVAL) -> AsyncIterator[None]:
        """Flush every `interval` while the block runs, and once more at its end (the worker stopping)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.flush()

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            self.flush()


class FlushedTogether(Flushed):
    """Several tallies flushed by one task, in the given order: a scrape that shows a later one's counts (say the
    requests') also shows what the earlier ones tallied before them (their storage operations and statements)."""

    def __init__(self, parts: Sequence[Flushed]) -> None:
        self._parts = tuple(parts)

    def flush(self) -> None:
        for part in self._parts:
            part.flush()
