"""Blob bytes onto the wire: a file sent by the kernel (`sendfile`; read with its headers when small) or storage
reads streamed, whole or in the windows a `Range` asks for (`ranges.framing`); and the conditional headers a blob's
digest answers. Files are opened and read on the event loop, as sendfile reads them there too: a thread hop costs
more than a page-cache read.

Not aiohttp's FileResponse: it tags a file with its mtime and size (a GET would carry another ETag than the HEAD,
and `If-None-Match: "<digest>"` would never match), takes the length from the file rather than from the blob's
verified size (a file cut short on disk went out as a complete 200 of fewer bytes), opens the file in a thread, and
serves one range at most.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from aiohttp import hdrs, web

from docker_registry.core import exceptions

from .ranges import Framing

log = logging.getLogger("docker_registry.server.http")


def none_match(request: web.Request, etag: str) -> bool:
    """Whether `If-None-Match` lists `etag` (weak or strong, or `*`): the client has the content already."""
    value = request.headers.get(hdrs.IF_NONE_MATCH)
    if value is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in value.split(",")]
    return "*" in tags or etag in tags


def range_applies(request: web.Request, etag: str) -> bool:
    """Whether `Range` is to be served: no `If-Range`, or one naming `etag` (a strong comparison, RFC 9110 13.1.5;
    a date never matches, since blobs carry no `Last-Modified`). Otherwise the whole blob is the answer."""
    value = request.headers.get(hdrs.IF_RANGE)
    return value is None or value.strip() == etag


SMALL_ANSWER = 64 * 1024
"""Answers up to this size (most blobs pulled are image configs of a few KB, and a partial pull's windows are
files) are read from the file and sent with their headers in one write: the kernel's sendfile saves copying the
bytes, but costs a syscall and a wait on the socket's buffer per window, more than copying a few KB."""
SMALL_WINDOW = 16 * 1024
"""Windows of a larger answer up to this size are read too, and written with the framing around them."""
READ_THROUGH = 1024 * 1024
"""Bytes between two windows that one storage read goes through rather than ending and starting another: on S3 a
request costs more (tens of milliseconds) than reading that much, and a zstd:chunked pull asks for up to 1,024
windows at once."""


async def sendfile(request: web.BaseRequest, file: BinaryIO, offset: int, count: int) -> int:
    """Up to `count` bytes of `file` from `offset`, sent by the kernel after what the answer wrote so far (fewer
    only at the end of the file); asyncio copies through Python where the kernel cannot (TLS). They are counted as
    the writer counts what goes through it, so access logs and metrics report them (aiohttp's FileResponse does
    not)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away")  # as a write to it would
    file.seek(offset)  # asyncio's copying fallback reads from the file's position (the native path leaves it moved)
    try:
        sent = await asyncio.get_running_loop().sendfile(transport, file, offset, count)
    except BaseException:
        # cut (the client gone): asyncio leaves the file's position after what did go out, which is counted too
        request.writer.output_size += max(file.tell() - offset, 0)
        raise
    request.writer.output_size += sent
    return sent


async def send_blob(
    request: web.Request,
    local: str | None,
    read: Callable[[int, int], AsyncIterator[bytes]],
    framing: Framing,
    size: int,
    headers: dict[str, str],
    missing: Exception,
) -> web.StreamResponse:
    """The framed windows of a blob of `size` bytes: from its file when storage keeps it at `local` on this disk,
    else from storage reads (`read(start, stop)`). `missing` is raised, before any header, when storage has no
    such blob."""
    if local is not None:
        try:  # on the loop: opening a hot inode costs less than a thread hop
            file = open(local, "rb")  # noqa: ASYNC230, SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError):
            raise missing from None
        with file:
            try:
                return await send_file(request, file, size, framing, headers)
            except ShortFile as short:
                if short.answering:
                    raise  # the answer is cut: its headers went out
                log.error("%s: run `docker-registry fsck`", short)  # damaged storage: no traceback, no 500
                raise missing from None
    chunks = framed_reads(framing, read)
    try:
        first = await anext(chunks, b"")  # read before the headers go out: a missing blob is still an error answer
    except exceptions.FileNotFoundError:
        raise missing from None
    response = web.StreamResponse(status=framing.status, headers=headers)
    return await send_stream(request, response, framing.length, first, chunks)


async def send_file(
    request: web.Request, file: BinaryIO, size: int, framing: Framing, headers: dict[str, str]
) -> web.StreamResponse:
    """The framed windows of a blob's file of `size` bytes. A file found shorter than that cuts the answer (the
    client sees fewer bytes than announced) rather than completing it with other bytes than the blob's; in a
    small answer, read before its headers go out, it is an error answer."""
    if framing.length <= SMALL_ANSWER:
        try:
            body = b"".join([head + _read(file, start, stop, size) for head, start, stop in framing.parts])
        except ShortFile as short:
            short.answering = False
            raise
        return web.Response(status=framing.status, body=body + framing.end, headers=headers)
    response = web.StreamResponse(status=framing.status, headers=headers)
    response.content_length = framing.length
    if await _headers_only(request, response):
        return response
    pending: list[bytes] = []  # heads and small windows, written together
    held = 0
    for head, start, stop in framing.parts:
        pending.append(head)
        held += len(head)
        if stop - start <= SMALL_WINDOW:
            pending.append(_read(file, start, stop, size))
            held += stop - start
            if held < SMALL_ANSWER:
                continue
        if held:
            await response.write(b"".join(pending))
            await asyncio.sleep(0)  # reads of many small windows run on the loop: let other requests in between
        pending, held = [], 0
        if stop - start > SMALL_WINDOW and await sendfile(request, file, start, stop - start) < stop - start:
            raise _short(file, size)
    await response.write_eof(b"".join([*pending, framing.end]))
    return response


def _read(file: BinaryIO, start: int, stop: int, size: int) -> bytes:
    data = os.pread(file.fileno(), stop - start, start)
    if len(data) < stop - start:
        raise _short(file, size)
    return data


class ShortFile(OSError):
    """A blob's file holds fewer bytes than the blob (damaged storage: truncated by hand, a disk error). Found
    before an answer's headers, it answers as a missing blob does; after, the answer is cut."""

    answering = True


def _short(file: BinaryIO, size: int) -> ShortFile:
    return ShortFile(f"{file.name} holds fewer bytes than the blob's {size}")


async def framed_reads(
    framing: Framing, read: Callable[[int, int], AsyncIterator[bytes]]
) -> AsyncIterator[bytes | memoryview]:
    """The framed windows as storage reads them (`read(start, stop)`): windows in ascending order with less than
    `READ_THROUGH` between them are one read. Each window's head goes out with the window's first bytes, so the first
    chunk of all is read from storage: a blob missing there fails before any header. Storage giving fewer bytes than
    a window holds is an error (the answer is cut, never framed around a gap)."""
    for run in _runs(framing.parts):
        chunks = aiter(read(run[0][1], run[-1][2]))
        stream, position = _Stream(chunks), run[0][1]
        try:
            if run[-1][2] == run[0][1]:  # the empty blob: its read still finds a blob missing from storage
                async for _ in chunks:
                    pass
            for head, start, stop in run:
                await stream.skip(start - position)
                left = stop - start
                async for piece in stream.take(left):
                    left -= len(piece)
                    yield head + piece if head else piece
                    head = b""
                if left:
                    raise OSError(f"storage gave {stop - start - left} of the {stop - start} bytes from {start}")
                position = stop
        finally:
            close = getattr(chunks, "aclose", None)  # a read ended where the run does, not at its own end
            if close is not None:
                await close()
    if framing.end:
        yield framing.end


def _runs(parts: list[tuple[bytes, int, int]]) -> list[list[tuple[bytes, int, int]]]:
    """The windows in runs that one storage read serves: each after the one before, within `READ_THROUGH` of it."""
    runs: list[list[tuple[bytes, int, int]]] = []
    for part in parts:
        if runs and 0 <= part[1] - runs[-1][-1][2] <= READ_THROUGH:
            runs[-1].append(part)
        else:
            runs.append([part])
    return runs


class _Stream:
    """A storage read taken apart at byte positions, its chunks sliced without copying."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    async def take(self, count: int) -> AsyncIterator[memoryview]:
        """The next `count` bytes as they come; fewer only where the read ends."""
        while count > 0:
            if not self._pending:
                chunk = await anext(self._chunks, None)
                if chunk is None:
                    return
                self._pending = memoryview(chunk)
            piece, self._pending = self._pending[:count], self._pending[count:]
            count -= len(piece)
            yield piece

    async def skip(self, count: int) -> None:
        async for _ in self.take(count):
            pass


async def send_stream(
    request: web.Request,
    response: web.StreamResponse,
    length: int,
    first: bytes | memoryview,
    rest: AsyncIterator[bytes | memoryview],
) -> web.StreamResponse:
    """Send a storage read whose first chunk the caller already holds: reading it before the headers go out lets a
    file missing from storage still be answered with an error instead of a cut-off body."""
    response.content_length = length
    if await _headers_only(request, response):
        return response
    await response.write(first)
    async for chunk in rest:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _headers_only(request: web.Request, response: web.StreamResponse) -> bool:
    """Send the headers; True, with the answer ended, for a HEAD (routes that serve GET answer HEAD too): aiohttp
    sends whatever body a handler writes, even to a HEAD, where the client would read it as its next answer."""
    await response.prepare(request)
    if request.method != "HEAD":
        return False
    await response.write_eof()
    return True
