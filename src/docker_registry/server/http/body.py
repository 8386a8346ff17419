"""Request bodies as a stream of ~1 MiB buffers, so hashing and writing run in few, large thread hops.

The server reads up to `READ_BUFFER_SIZE` ahead per connection (aiohttp's `read_bufsize`), so a fast client is not
paused and resumed every 64 KiB. A body must keep a minimum pace (`http.timeout.minrate` bytes per second averaged
over each `http.timeout.ratewindow`): a client trickling a byte now and then would otherwise hold a connection,
and an upload session's claim, forever.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..registry.errors import BLOB_UPLOAD_INVALID, SIZE_INVALID, RegistryError
from .context import config

BUFFER_SIZE = 1024 * 1024
READ_BUFFER_SIZE = 1024 * 1024
HEAP_KEEP = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_buffer_memory() -> None:
    """Keep ~1 MiB body buffers on the heap and the freed ones for the next: by default glibc maps each such
    buffer fresh and unmaps it when freed, and the kernel zeroes and faults in every page again (measured: a third
    of the server's system time during uploads). Process-wide, so each worker calls it once as it builds its
    application, never merely by importing this module. Elsewhere than glibc this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(_M_MMAP_THRESHOLD, 4 * BUFFER_SIZE)
    mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP)


def declared_length(request: web.Request) -> int | None:
    value = request.headers.get("Content-Length")
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise RegistryError(SIZE_INVALID, f"invalid Content-Length {value[:40]!r}")
    return int(value)


def arrived(request: web.Request) -> bool:
    """True when the whole body is received and buffered already (a small one usually is by the time a handler
    runs): reading it cannot wait for the client."""
    return request.content.is_eof()


async def _paced_reads(request: web.Request) -> AsyncIterator[bytes]:
    """The body as the connection delivers it; BLOB_UPLOAD_INVALID (408) when a window passes with fewer bytes than
    the minimum rate asks, whether they trickle or stop."""
    timeouts = config(request).http.timeout
    minimum = timeouts.minrate * timeouts.ratewindow
    loop = asyncio.get_running_loop()
    window_end = loop.time() + timeouts.ratewindow
    in_window = 0
    content = request.content
    while True:
        if content.is_eof():
            # the rest of the body is buffered already (all of a small one, usually, by the time a handler runs):
            # reading it cannot wait, so no timer is armed and cancelled (a heap entry each, twice per body)
            data, end_of_http_chunk = await content.readchunk()
        else:
            try:
                async with asyncio.timeout_at(window_end if minimum else None):
                    data, end_of_http_chunk = await content.readchunk()
            except TimeoutError:
                data, end_of_http_chunk = b"", True  # the window ended with the client silent: judged below
        if loop.time() >= window_end and minimum:
            if in_window < minimum:
                message = f"request body slower than {timeouts.minrate} bytes/s over {timeouts.ratewindow:g} s"
                raise RegistryError(BLOB_UPLOAD_INVALID, message, status=408, headers={"Connection": "close"})
            window_end, in_window = loop.time() + timeouts.ratewindow, 0
        if not data:
            if end_of_http_chunk and not content.at_eof():
                continue  # a boundary of chunked transfer encoding (or a window just judged), not the end
            return  # (aiohttp's shared empty body answers (b"", True) for ever once read: at_eof ends it)
        in_window += len(data)
        yield data


async def chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in buffers of about 1 MiB; a body shorter than its Content-Length is an error.

    While the body streams in, the connection is read in `BUFFER_SIZE` slices rather than asyncio's 256 KiB, so
    each piece is usually a whole buffer already: a quarter of the event-loop work per byte, and no join.

    A body that breaks off, or falls below the minimum pace, ends with an error, but only after what did arrive has
    been given: a chunk written so far stays in its session, which the client may resume from there.
    """
    expected = declared_length(request)
    received = 0
    pending: list[bytes] = []
    pending_size = 0
    with _large_reads(request):
        failure: RegistryError | None = None
        try:
            async for data in _paced_reads(request):
                received += len(data)
                pending.append(data)
                pending_size += len(data)
                if pending_size >= BUFFER_SIZE:
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending, pending_size = [], 0
        except (OSError, HttpProcessingError) as e:
            failure = RegistryError(BLOB_UPLOAD_INVALID, f"request body broke off after {received} bytes: {e}")
        except RegistryError as e:
            failure = e
        if failure is not None:
            if pending:
                yield b"".join(pending)
            raise failure
    if expected is not None and received != expected:
        raise RegistryError(SIZE_INVALID, f"received {received} bytes, Content-Length announced {expected}")
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


@contextmanager
def _large_reads(request: web.Request) -> Iterator[None]:
    """Let the transport read up to `BUFFER_SIZE` per call while in the block; asyncio's selector transports
    honour their `max_size` attribute (others lack it and are left alone). Small requests keep small reads."""
    transport = request.transport
    if transport is None or not isinstance(getattr(transport, "max_size", None), int):
        yield
        return
    # max_size is an attribute of asyncio's private _SelectorTransport, absent from the public Transport type
    transport.max_size = BUFFER_SIZE  # type: ignore[attr-defined]
    try:
        yield
    finally:
        # back to the class default; a body abandoned mid-request is closed late, maybe after the connection's next
        # request has set and removed its own
        with suppress(AttributeError):
            del transport.max_size  # type: ignore[attr-defined]


async def read_limited(request: web.Request, limit: int, error: RegistryError) -> bytes:
    """The whole (small) body; `error` if it is, or claims to be, larger than `limit`."""
    expected = declared_length(request)
    if expected is not None and expected > limit:
        raise error
    buffer = bytearray()
    try:
        async for chunk in _paced_reads(request):
            buffer += chunk
            if len(buffer) > limit:
                raise error
    except (OSError, HttpProcessingError) as e:
        raise RegistryError(SIZE_INVALID, f"request body broke off after {len(buffer)} bytes: {e}") from None
    if expected is not None and len(buffer) != expected:
        raise RegistryError(SIZE_INVALID, f"received {len(buffer)} bytes, Content-Length announced {expected}")
    return bytes(buffer)
