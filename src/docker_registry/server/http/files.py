"""Blob files sent with sendfile, under the blob's own ETag.

aiohttp's FileResponse tags a file with its mtime and size and evaluates conditional headers against that tag, so a
GET would carry another ETag than the HEAD and `If-None-Match: "<digest>"` would never match. A blob's content never
changes under its digest: the digest is its tag, and the handlers answer conditional requests against it before the
file is opened.
"""

from __future__ import annotations

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
    """A FileResponse that keeps the ETag it was given and leaves conditional requests to the handler."""

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        """Ignore the mtime-size tag FileResponse sets: the handler's `ETag: "<digest>"` header stays."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = CIMultiDict(request.headers)
        for name in _CONDITIONALS:
            headers.popall(name, None)
        return await super().prepare(request.clone(headers=headers))
