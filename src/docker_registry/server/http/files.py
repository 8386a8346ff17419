"""Blob files sent with sendfile, under the blob's own ETag.

aiohttp's FileResponse tags a file with its mtime and size and evaluates conditional headers against that tag, so a
GET would carry another ETag than the HEAD and `If-None-Match: "<digest>"` would never match. A blob's content never
changes under its digest: the digest is its tag, and the handlers answer conditional requests against it before the
file is opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import ETag, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

_CONDITIONALS = (hdrs.IF_MATCH, hdrs.IF_NONE_MATCH, hdrs.IF_MODIFIED_SINCE, hdrs.IF_UNMODIFIED_SINCE, hdrs.IF_RANGE)


def none_match(request: web.Request, etag: str) -> bool:
    """Whether `If-None-Match` lists `etag` (weak or strong, or `*`): the client has the content already."""
    value = request.headers.get(hdrs.IF_NONE_MATCH)
    if value is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in value.split(",")]
    return "*" in tags or etag in tags


class BlobFileResponse(web.FileResponse):
    """A FileResponse that keeps the ETag it was given, leaves conditional requests to the handler, and serves the
    byte window the handler parsed (`ranges.byte_range`) instead of parsing `Range` again by its own, stricter rules
    (which refused `bytes= 0-1` and served `bytes=0-99999999999999999999` whole)."""

    def __init__(self, path: str, window: tuple[int, int] | None, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self._window = window

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        """Ignore the mtime-size tag FileResponse sets: the handler's `ETag: "<digest>"` header stays."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = CIMultiDict(request.headers)
        for name in (*_CONDITIONALS, hdrs.RANGE):
            headers.popall(name, None)
        if self._window is not None:
            start, stop = self._window
            headers[hdrs.RANGE] = f"bytes={start}-{stop - 1}"
        return await super().prepare(request.clone(headers=headers))


async def send_stream(
    request: web.Request, response: web.StreamResponse, length: int, first: bytes, rest: AsyncIterator[bytes]
) -> web.StreamResponse:
    """Send a storage read whose first chunk the caller already holds: reading it before the headers go out lets a
    file missing from storage still be answered with an error instead of a cut-off body."""
    response.content_length = length
    await response.prepare(request)
    await response.write(first)
    async for chunk in rest:
        await response.write(chunk)
    await response.write_eof()
    return response
