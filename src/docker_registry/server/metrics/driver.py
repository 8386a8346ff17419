"""Storage driver operations timed and their failures counted, by operation: a driver wrapped around the
configured one. It implements the protected methods by calling the wrapped driver's public ones, so the registry
logic sees an ordinary driver and the wrapped one still validates every path itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from docker_registry.core.driver import Base, Stat, Writer

from .instruments import Instruments

T = TypeVar("T")


class _Timer:
    """One operation's series: its timings go to the tally (added to the histogram at flush, see `tallies`), its
    failures (rare) straight to the error counter's child, bound once."""

    def __init__(self, instruments: Instruments, driver: str, action: str) -> None:
        self.key = (driver, action)
        self.timings = instruments.storage_timings
        self.timings.bind(self.key)
        self.errors = instruments.storage_errors.labels(driver, action)

    async def run(self, operation: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await operation
        except Exception:  # not a cancelled request or a download the client left: the storage did nothing wrong
            self.errors.inc()
            raise
        finally:
            self.timings.observe(self.key, time.perf_counter() - start)

    def call(self, operation: Callable[[], T]) -> T:
        """`run` for a blocking call, made in a thread of the caller's (the tally takes its own lock)."""
        start = time.perf_counter()
        try:
            return operation()
        except Exception:
            self.errors.inc()
            raise
        finally:
            self.timings.observe(self.key, time.perf_counter() - start)


ACTIONS = (
    "get_content",
    "put_content",
    "stream_read",
    "stream_write",
    "list_directory",
    "exists",
    "remove",
    "get_size",
    "content_redirect_url",
    "stat",
    "move",
    "put_if_absent",
    "read_unfinished",
    "walk",
    "writer",
    "write",
    "commit",
    "cancel",
)


class InstrumentedDriver(Base):
    def __init__(self, inner: Base, name: str, instruments: Instruments) -> None:
        super().__init__(inner.options)
        self.inner = inner
        self.moves_by_copy = inner.moves_by_copy
        self._timers = {action: _Timer(instruments, name, action) for action in ACTIONS}

    async def _get_content(self, path: str) -> bytes:
        return await self._timers["get_content"].run(self.inner.get_content(path))

    async def _put_content(self, path: str, data: bytes) -> None:
        await self._timers["put_content"].run(self.inner.put_content(path, data))

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        """Timed from the call to the last chunk read (a download's whole read)."""
        async for chunk in _timed_iteration(self._timers["stream_read"], self.inner.stream_read(path, offset, length)):
            yield chunk

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        return await self._timers["stream_write"].run(self.inner.stream_write(path, chunks))

    async def _list_directory(self, prefix: str) -> list[str]:
        return await self._timers["list_directory"].run(self.inner.list_directory(prefix))

    async def _exists(self, path: str) -> bool:
        return await self._timers["exists"].run(self.inner.exists(path))

    async def _remove(self, path: str) -> None:
        await self._timers["remove"].run(self.inner.remove(path))

    async def _get_size(self, path: str) -> int:
        return await self._timers["get_size"].run(self.inner.get_size(path))

    async def _content_redirect_url(self, path: str) -> str | None:
        return await self._timers["content_redirect_url"].run(self.inner.content_redirect_url(path))

    async def _stat(self, path: str) -> Stat:
        return await self._timers["stat"].run(self.inner.stat(path))

    async def _move(self, src: str, dst: str) -> None:
        await self._timers["move"].run(self.inner.move(src, dst))

    async def _move_if_absent(self, src: str, dst: str, sync_source: bool) -> bool:
        """Timed as a move: it is how uploads publish a blob."""
        return await self._timers["move"].run(self.inner.move_if_absent(src, dst, sync_source))

    def _mover(self, src: str, dst: str, sync_source: bool) -> Callable[[], bool] | None:
        """Timed as a move, as `_move_if_absent`, where the wrapped driver has a blocking one."""
        move = self.inner.mover(src, dst, sync_source)
        if move is None:
            return None
        timer = self._timers["move"]
        return lambda: timer.call(move)

    async def _put_if_absent(self, path: str, data: bytes) -> bool:
        """Timed on its own: it stores and publishes a small blob in one step, where uploads otherwise count a
        `write` and a `move`."""
        return await self._timers["put_if_absent"].run(self.inner.put_if_absent(path, data))

    def _putter(self, path: str, data: bytes) -> Callable[[], bool] | None:
        """Timed as `_put_if_absent`, where the wrapped driver has a blocking one."""
        put = self.inner.putter(path, data)
        if put is None:
            return None
        timer = self._timers["put_if_absent"]
        return lambda: timer.call(put)

    async def _append_bytes(self, path: str, data: bytes, expected_size: int, durable: bool) -> int:
        """Timed as a write: it is an upload's small chunk, opened, written and closed in one step."""
        return await self._timers["write"].run(self.inner.append_bytes(path, data, expected_size, durable))

    async def _read_unfinished(self, path: str, limit: int) -> bytes | None:
        return await self._timers["read_unfinished"].run(self.inner.read_unfinished(path, limit))

    def _unfinished_reader(self, path: str, limit: int) -> Callable[[], bytes | None] | None:
        """Timed as `_read_unfinished`, where the wrapped driver has a blocking one."""
        read = self.inner.unfinished_reader(path, limit)
        if read is None:
            return None
        timer = self._timers["read_unfinished"]
        return lambda: timer.call(read)

    def _appender(self, path: str) -> Callable[[bytes, int], int] | None:
        """Not timed: it runs inside a database write, which the database metrics time."""
        return self.inner.appender(path)

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        async for path in _timed_iteration(self._timers["walk"], self.inner.walk(prefix)):
            yield path

    async def _writer(self, path: str, append: bool) -> Writer:
        inner = await self._timers["writer"].run(self.inner.writer(path, append))
        return _InstrumentedWriter(inner, self._timers)

    def _local_path(self, path: str) -> str | None:
        return self.inner.local_path(path)

    async def close(self) -> None:
        await self.inner.close()


async def _timed_iteration(timer: _Timer, items: AsyncIterator[T]) -> AsyncIterator[T]:
    start = time.perf_counter()
    try:
        async for item in items:
            yield item
    except Exception:
        timer.errors.inc()
        raise
    finally:
        timer.timings.observe(timer.key, time.perf_counter() - start)


class _InstrumentedWriter(Writer):
    def __init__(self, inner: Writer, timers: dict[str, _Timer]) -> None:
        self.inner = inner
        self.path = inner.path
        self._write = timers["write"]
        self._commit = timers["commit"]
        self._cancel = timers["cancel"]

    @property
    def size(self) -> int:
        return self.inner.size

    async def write(self, data: bytes) -> int:
        return await self._write.run(self.inner.write(data))

    async def close(self) -> None:
        await self.inner.close()

    async def commit(self) -> None:
        await self._commit.run(self.inner.commit())

    async def cancel(self) -> None:
        await self._cancel.run(self.inner.cancel())
