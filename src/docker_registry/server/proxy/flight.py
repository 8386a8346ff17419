"""Single flight for blobs: however many requests, in however many workers, ask for one uncached blob, one of
them starts one upstream fetch and every one of them streams the bytes as they arrive.

The fetch is the registry's own monolithic upload, under an upload id derived from the digest, so its data grows
at a known path (`uploads/<id>/data`) and becomes an ordinary blob only after its digest matched (the upload
path's own check). Who fetches is decided by an exclusive `flock` on a small file per digest (`proxy-flights/`
beside the upload area): it works between the workers of a node, and within one worker too, since each request
opens the file itself. The fetcher writes the blob's size into that file; the others read the growing data file
and stop when it holds that many bytes, or when the fetcher is gone (lock released, data file moved or replaced):
the bytes already in their open file then either complete the blob (it was published) or not (the upstream died
mid-blob: nothing was kept, and the client's connection is cut, as the size it was promised is not reached). A
reader sends the last byte only once its fetch stored the blob, its digest matched (the fetcher marks its lock file
so): an upstream that sends other bytes than the digest's never completes a client's download either.

Storage without a local disk (S3, memory) has no growing file to follow: there the fetcher tees the bytes, each
chunk written to a spool file on local disk (`proxy.spooldirectory`, lock files beside it) before it goes on to the
storage's upload, and the readers follow the spool file exactly as they would the upload's data. The upload then
has an id of its own (two nodes fetching one blob never write one object), and the spool file is removed when the
fetch ends, whatever its outcome: as on a disk, nothing is kept unless the digest matched.

The fetch is a task of its own, not part of any client's request: a client that disconnects leaves it running
for the others, and the blob is cached anyway. It receives the upstream's bytes ahead of its writer, up to a bounded
`window` held in memory, from which the readers of its own worker send what the file does not hold yet: the first
client streams at the upstream's speed, not at the disk's (readers of other workers follow the file).

Speed: a reader sends each new stretch of the data file with `sendfile` (the kernel copies from the page cache to
the socket), and the lock and data files' small calls (open, flock, fstat, a short pwrite) run on the event loop:
they take microseconds on a local disk, where a thread hop costs milliseconds on a busy machine. Bulk work (hashing
and writing the blob, the spool's writes) stays in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

import aiohttp
from aiohttp import web

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest

from ..http import files
from ..registry.errors import BLOB_UNKNOWN, DIGEST_INVALID, UNAVAILABLE, RegistryError
from ..registry.service import Registry
from ..registry.upload_area import upload_path
from .targets import Target
from .upstream import UpstreamError, UpstreamNotFound
from .window import Window, must_wait

log = logging.getLogger(__name__)

FLIGHTS = "proxy-flights"
SPOOLED = "proxy-spool"
POLL = 0.005
"""Seconds a reader waits at the end of the growing file before looking again, unless the fetch of its own worker
wakes it sooner (each chunk received does)."""
TAIL_POLL = 0.001
"""The same once the fetch of the reader's worker has received every byte: the last ones land in the file when the
writer commits, which wakes nobody, and a client should not wait a whole `POLL` for them."""
READ_SIZE = 1024 * 1024
STORED = b"stored\n"
"""What a fetch writes after the size in its lock file once the blob is stored: its readers may then send the last
byte (each lock file is one fetch's: the next fetch makes a new one)."""
START_TIMEOUT = 120.0
"""How long a reader waits for the fetcher to learn the blob's size from the upstream."""
FAILURE_MEMORY_SECONDS = 600.0
"""How long a failed fetch is remembered for the requests that followed it (they ask only of fetches that ended
after they began); older failures are forgotten when the next fetch ends, whatever blob they were of. Until then a
failure holds the frames of the last request it was raised to, at most."""
_NAMESPACE = uuid.UUID("7d0f3c4e-52a4-4c47-9a55-0c1e8d3e6f21")


@dataclass(frozen=True, slots=True)
class _Flight:
    upload_id: str | None
    """The upload's id on a local disk (its data is what readers follow); None for a spooled fetch (a new one)."""
    lock_path: str
    data_path: str


def _flight(registry: Registry, digest: Digest, spool: str) -> _Flight:
    """Where the fetch of `digest` is locked and its bytes grow: in the storage's own upload area on a local disk,
    else in the spool directory."""
    name = f"{digest.algorithm}-{digest.encoded}"
    upload_id = str(uuid.uuid5(_NAMESPACE, str(digest)))
    data = registry.driver.local_path(upload_path(upload_id))
    lock = registry.driver.local_path(f"{FLIGHTS}/{name}")
    if data is not None and lock is not None:
        return _Flight(upload_id, lock, data)
    return _Flight(None, os.path.join(spool, FLIGHTS, name), os.path.join(spool, SPOOLED, name))


def _new_spool(path: str) -> BinaryIO:
    """A fresh spool file at `path` (a crashed fetcher's is replaced, not reused: its readers see it gone)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return open(path, "xb", buffering=0)  # closed by the fetch, at its end


def _write_all(spool: BinaryIO, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = spool.write(view)
        view = view[written or 0 :]


def _try_lock(path: str) -> int | None:
    """An exclusive lock on a new, empty file at `path`, held through the returned descriptor; None when another
    fetch holds the file there. A lock file is one fetch's, start to end (its readers take its outcome from it):
    one that an ending fetch unlinked between our open and our lock is left for the path's next file, and a crashed
    fetcher's (unlocked, its size still in it) is replaced, never reused, so no reader can pair its stale size and
    leftover data with a new fetch."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        opened = os.fstat(fd)
        try:
            at_path = os.stat(path).st_ino == opened.st_ino  # not unlinked by a fetch that ended meanwhile
        except FileNotFoundError:
            at_path = False
        if at_path and not opened.st_size:
            return fd
        if at_path:
            os.unlink(path)  # a crashed fetcher's, its size still in it
        os.close(fd)


def _fetcher_gone(flight: _Flight, data_fd: int | None) -> bool:
    """True when no fetch holds the lock, or the data file this reader has open is no longer the fetch's."""
    try:
        fd = os.open(flight.lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    if data_fd is None:
        return False
    try:
        return os.stat(flight.data_path).st_ino != os.fstat(data_fd).st_ino
    except FileNotFoundError:
        return True


def _announced_size(lock: int) -> int | None:
    """The size the fetcher wrote into its lock file (-1: the upstream gave none), None until it did."""
    text = os.pread(lock, 32, 0).split(b"\n", 1)[0]
    return int(text) if text.removeprefix(b"-").isdigit() else None  # a partly written one (no newline yet) waits


def _held(lock: int) -> bool:
    """True while a fetch holds the lock file open as `lock`."""
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def _stored(lock: int) -> bool:
    """True when the fetch of this lock file stored the blob (read once it released the lock)."""
    return os.pread(lock, 64, 0).endswith(STORED)


def _join(flight: _Flight) -> tuple[int, int, BinaryIO] | None:
    """The running fetch as a reader follows it: its lock file (open), the size it announced and its data file (open),
    all three of one fetch; None until there is one to join (no size, no data file yet, or it just ended). The lock
    is held before the size is read and still after the data file is opened, so that file is the holder's: a lock
    file serves one fetch, which removes a crashed one's leftovers before it announces a size."""
    try:
        lock = os.open(flight.lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = _announced_size(lock) if _held(lock) else None
        data = _open_data(flight) if size is not None else None
    except BaseException:
        os.close(lock)
        raise
    if size is not None and data is not None and _held(lock):
        return lock, size, data
    if data is not None:
        data.close()
    os.close(lock)
    return None


def _headers(digest: Digest) -> dict[str, str]:
    return {"Docker-Content-Digest": str(digest), "ETag": f'"{digest}"', "Content-Type": "application/octet-stream"}


def _open_data(flight: _Flight) -> BinaryIO | None:
    try:
        return open(flight.data_path, "rb")  # the reader closes it after streaming
    except FileNotFoundError:
        return None


class Flights:
    """The blob fetches of one worker: started here, followed by any request of any worker."""

    def __init__(self, registry: Registry, spool: str) -> None:
        self._registry = registry
        self._spool = spool
        """The local directory of spooled fetches, for storage without a local disk."""
        self._running: dict[Digest, asyncio.Task[None]] = {}
        """This worker's fetches, referenced here while they run (the event loop keeps only weak references)."""
        self._progress: dict[Digest, asyncio.Event] = {}
        """Set (and replaced) whenever this worker's fetch of the digest receives bytes: its readers wake at once
        instead of at their next poll."""
        self._windows: dict[Digest, Window] = {}
        """The received bytes of this worker's running fetches, for its readers (`window`)."""
        self._tails: set[Digest] = set()
        """This worker's fetches that received every byte and wait for the writer to put the last ones in the file."""
        self._failures: dict[Digest, tuple[BaseException, float]] = {}
        """The last failed fetch of a digest in this worker and when it ended, for the requests that followed it."""

    async def serve(
        self,
        request: web.Request,
        target: Target,
        digest: Digest,
        confirm: Callable[[], Awaitable[object]] | None = None,
    ) -> web.StreamResponse | None:
        """Stream the blob as it arrives from the upstream; None when it turned out to be cached meanwhile (the
        caller serves it from the store). A blob the upstream lacks is BLOB_UNKNOWN, an unreachable upstream
        UNAVAILABLE. `confirm`, when given, is awaited before joining a fetch that another request started, and
        raises when this request's repository may not have the blob: that fetch is for the other one's."""
        started = time.monotonic()
        flight = _flight(self._registry, digest, self._spool)
        for _ in range(2):  # a fetcher of another worker that failed before it began: lead once ourselves
            fd = _try_lock(flight.lock_path)
            if fd is not None:
                self._start(target, digest, flight, fd)
            elif confirm is not None:
                await confirm()
                confirm = None
            response = await self._follow(request, digest, flight)
            if response is not None or await self._registry.store.known_blob_size(digest) is not None:
                return response
            failure = self._failures.get(digest)
            if failure is not None and failure[1] >= started:
                # its own traceback from here: raised as it was, each follower's frames were added to the last's
                raise failure[0].with_traceback(None)
        raise RegistryError(UNAVAILABLE, message="the upstream fetch of this blob failed", status=503)

    def _start(self, target: Target, digest: Digest, flight: _Flight, fd: int) -> None:
        task = asyncio.create_task(self._fetch(target, digest, flight, fd))
        self._running[digest] = task
        task.add_done_callback(lambda done: self._finished(digest, done))

    def _finished(self, digest: Digest, task: asyncio.Task[None]) -> None:
        if self._running.get(digest) is task:
            del self._running[digest]
        now = time.monotonic()
        kept = self._failures.items()
        self._failures = {d: f for d, f in kept if d != digest and now - f[1] < FAILURE_MEMORY_SECONDS}
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            # kept without its traceback and the exceptions it came from: they held the fetch's frames alive, with
            # the bytes it had received (a probe: 70 failed fetches of 8 MiB blobs kept 430 MB in two workers)
            failure.__traceback__, failure.__context__, failure.__cause__ = None, None, None
            self._failures[digest] = (failure, now)

    async def _fetch(self, target: Target, digest: Digest, flight: _Flight, fd: int) -> None:
        """The one upstream GET, written through the registry's upload path (and the spool file, for storage
        without a local disk); the lock is released at the end."""
        spool: BinaryIO | None = None
        stored = False
        try:
            if await self._registry.store.known_blob_size(digest) is not None:
                return  # fetched by another worker between the caller's look and the lock
            if flight.upload_id is None:
                spool = _new_spool(flight.data_path)
            elif os.path.lexists(os.path.dirname(flight.data_path)):  # noqa: ASYNC240 - one lstat, no thread hop
                with contextlib.suppress(exceptions.FileNotFoundError):  # a crashed fetcher's leftovers
                    await self._registry.driver.remove(f"uploads/{flight.upload_id}")
            async with target.upstream.blob(target.remote_name, str(digest)) as response:
                size = response.content_length if response.content_length is not None else -1
                window = self._windows[digest] = Window(flight.data_path)  # before its readers learn the size
                os.pwrite(fd, f"{size}\n".encode(), 0)
                self._wake(digest)  # its readers look for the data file now
                received: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
                receiving = asyncio.create_task(self._receive(digest, response, window, received))
                try:
                    chunks = self._announcing(digest, received, spool)
                    await self._registry.put_blob(target.local_name, digest, chunks, flight.upload_id, announce=False)
                    os.pwrite(fd, STORED, len(f"{size}\n"))
                    stored = True
                finally:
                    receiving.cancel()  # done already, unless the writer failed first
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                self._wake(digest)  # the last bytes are in the file now (its readers need not wait for a poll)
        except UpstreamNotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)}) from None
        except RegistryError as exc:
            if exc.error is not DIGEST_INVALID:
                raise
            log.warning("upstream fetch of %s failed: the upstream sent other bytes (%s)", digest, exc.detail)
            message = "the upstream sent other bytes than the digest's"
            raise RegistryError(UNAVAILABLE, message=message, status=502) from None
        except UpstreamError as exc:  # down, limiting us, or refusing our credentials: nothing kept
            log.warning("upstream fetch of %s failed: %s", digest, exc)
            raise exc.client_error() from None
        except (aiohttp.ClientError, TimeoutError) as exc:  # died mid-blob: nothing kept
            log.warning("upstream fetch of %s failed: %s", digest, exc)
            raise RegistryError(UNAVAILABLE, message=f"upstream unavailable: {exc}", status=503) from None
        except Exception as exc:
            log.warning("upstream fetch of %s for %s failed: %s", digest, target.local_name, exc)
            raise
        finally:
            self._tails.discard(digest)
            self._windows.pop(digest, None)
            if spool is not None:  # its readers keep what they opened; nobody opens it again
                spool.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(flight.data_path)
            # Removed while still locked: whoever opens the path later makes a new file and, holding its lock,
            # finds the blob stored (or fetches again after a failure); who holds the old one sees it gone, and
            # whether it was stored.
            if not stored:
                os.ftruncate(fd, 0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flight.lock_path)
            os.close(fd)
            self._wake(digest)  # its readers waiting for the outcome

    async def _receive(
        self,
        digest: Digest,
        response: aiohttp.ClientResponse,
        window: Window,
        received: asyncio.Queue[bytes | BaseException | None],
    ) -> None:
        """Read the upstream's answer into the window (this worker's readers send from it at once) and on to the
        writer, pausing while the window is full; ends with None, or the error that broke the answer off."""
        try:
            async for chunk in response.content.iter_any():
                window.add(chunk)
                received.put_nowait(chunk)
                self._wake(digest)
                while must_wait(window, self._windows.values()):
                    await self._wait(digest)  # the writer wakes it as it takes each chunk
            received.put_nowait(None)
        except Exception as exc:  # the writer raises it: nothing is kept
            received.put_nowait(exc)

    async def _announcing(
        self, digest: Digest, received: asyncio.Queue[bytes | BaseException | None], spool: BinaryIO | None
    ) -> AsyncIterator[bytes]:
        """The upstream's bytes on their way to the storage; each chunk first goes to the spool file, if any, so
        readers of other workers get it before the storage's upload (an S3 part) holds it."""
        try:
            while (chunk := await received.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                if spool is not None:
                    await asyncio.to_thread(_write_all, spool, chunk)
                    self._wake(digest)
                yield chunk
                self._wake(digest)  # the chunk was handed to the writer: it may be on disk by the time they read
            self._tails.add(digest)  # every byte received: the writer's commit puts the last ones in the file
        finally:
            self._wake(digest)

    def _wake(self, digest: Digest) -> None:
        event = self._progress.pop(digest, None)
        if event is not None:
            event.set()

    async def _wait(self, digest: Digest) -> None:
        event = self._progress.setdefault(digest, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), TAIL_POLL if digest in self._tails else POLL)

    async def _follow(self, request: web.Request, digest: Digest, flight: _Flight) -> web.StreamResponse | None:
        """Wait for the size and the data file, then stream it as it grows; None when the fetch ended first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while (joined := _join(flight)) is None:
            if _fetcher_gone(flight, None) or loop.time() > deadline:
                return None
            await self._wait(digest)
        lock, size, data = joined
        window = self._windows.get(digest)  # set when this worker fetches what that file holds
        try:
            if size < 0:
                return await self._stream_unsized(request, digest, flight, data, lock)
            return await self._stream(request, digest, flight, data, size, window, lock)
        finally:
            data.close()
            os.close(lock)

    async def _stream(
        self,
        request: web.Request,
        digest: Digest,
        flight: _Flight,
        data: BinaryIO,
        size: int,
        window: Window | None,
        lock: int,
    ) -> web.StreamResponse:
        """Send each new stretch of the growing file with `sendfile` as soon as it is there: no thread hop and no
        copy through Python per chunk (a stat of the open file tells how far it grew); bytes received but not in
        the file yet come from this worker's fetch's `window`, so a client gets the blob as fast as the upstream
        sends it. The last byte waits for the fetch to have stored the blob (`_outcome`)."""
        if size == 0 and not await self._outcome(digest, lock):  # no byte to hold back: the headers wait
            raise RegistryError(UNAVAILABLE, message="the upstream fetch of this blob failed", status=503)
        response = web.StreamResponse(headers=_headers(digest))
        response.content_length = size
        await response.prepare(request)
        sent, gone, limit = 0, False, max(size - 1, 0)
        while sent < size:
            if sent == limit and not await self._outcome(digest, lock):
                break
            end = size if sent >= limit else limit
            ready = min(os.fstat(data.fileno()).st_size, end) - sent
            if ready > 0:
                stretch = await files.sendfile(request, data, sent, ready)
                sent += stretch
                if stretch:
                    continue
            piece = window.at(sent) if window is not None else None
            if piece is not None:
                await response.write(piece[: end - sent])
                sent += min(len(piece), end - sent)
                continue
            if gone:
                break
            gone = _fetcher_gone(flight, data.fileno())  # one last look follows
            if not gone:
                await self._wait(digest)
        return await self._end(request, response, digest, sent == size, sent)

    async def _outcome(self, digest: Digest, lock: int) -> bool:
        """Wait for the fetch of `lock` to end: True when it stored the blob (the bytes its readers sent are the
        digest's)."""
        while _held(lock):
            await self._wait(digest)
        return _stored(lock)

    async def _stream_unsized(
        self, request: web.Request, digest: Digest, flight: _Flight, data: BinaryIO, lock: int
    ) -> web.StreamResponse:
        """An upstream that gave no size: the blob is sent chunked, read as it grows, and complete only if the fetch
        stored it (its digest matched)."""
        response = web.StreamResponse(headers=_headers(digest))
        await response.prepare(request)
        sent, gone = 0, False
        while True:
            chunk: bytes = await asyncio.to_thread(data.read, READ_SIZE)
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
                continue
            if gone:
                break
            gone = await asyncio.to_thread(_fetcher_gone, flight, data.fileno())  # one last read follows
            if not gone:
                await self._wait(digest)
        return await self._end(request, response, digest, await self._outcome(digest, lock), sent)

    async def _end(
        self, request: web.Request, response: web.StreamResponse, digest: Digest, complete: bool, sent: int
    ) -> web.StreamResponse:
        if not complete:
            log.warning("cut a download of %s after %d bytes: the upstream fetch failed", digest, sent)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
