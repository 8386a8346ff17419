"""Blob uploads: POST (a session, a monolithic upload with `?digest=`, or a cross-repository mount), status,
chunked PATCH with `Content-Range`, the finishing PUT, DELETE."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

from aiohttp import web

from docker_registry.core.digest import Digest

from ...registry import names
from ...registry.errors import DIGEST_INVALID, RANGE_INVALID, RegistryError
from ...registry.manifests import MAX_SIZE
from ...registry.uploads import progress_headers
from .. import body
from ..context import may_pull, registry, require_space, require_writable, user
from ..routing import Params

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?([0-9]+)-([0-9]+)$")


def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    location = f"/v2/{name}/blobs/uploads/{upload_id}"
    return {"Location": location, "Docker-Upload-UUID": upload_id, **progress_headers(size)}


def _created(name: str, digest: Digest) -> web.Response:
    headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)}
    return web.Response(status=201, headers=headers)


def _chunk(request: web.Request) -> tuple[int | None, AsyncIterable[bytes]]:
    """Where the chunk starts, from `Content-Range` (None when the client did not say), and its body. A body sent
    without a Content-Length (chunked transfer) is held to the range: the bytes past its end are refused."""
    value = request.headers.get("Content-Range")
    if value is None:
        return None, body.chunks(request)
    match = _CONTENT_RANGE.match(value.strip())
    if not match or not int(match[1]) <= int(match[2]) <= MAX_SIZE:  # no blob is larger: a range beyond is no range
        raise RegistryError(RANGE_INVALID, f"invalid Content-Range {value[:60]!r}")
    start, declared = int(match[1]), int(match[2]) - int(match[1]) + 1
    length = body.declared_length(request)
    if length is None:
        return start, _within(body.chunks(request), declared, value[:60])
    if length != declared:
        raise RegistryError(RANGE_INVALID, f"Content-Range {value[:60]!r} does not match Content-Length {length}")
    return start, body.chunks(request)


async def _within(chunks: AsyncIterable[bytes], length: int, declared: str) -> AsyncIterator[bytes]:
    """The body up to `length` bytes; RANGE_INVALID once more come. What the range covers is kept where a body that
    breaks off is (a PATCH), so the session holds at most what the client said it sent and can go on from the size
    its status reports (not said here: a closing PUT on S3 streams to the blob and keeps nothing)."""
    left = length
    async for chunk in chunks:
        if len(chunk) > left:
            if left:
                yield chunk[:left]
            raise RegistryError(RANGE_INVALID, f"the body is longer than Content-Range {declared!r} says")
        left -= len(chunk)
        yield chunk


async def before_new_upload(request: web.Request, params: Params) -> None:
    require_writable(request)
    if "mount" not in request.query:
        await require_space(request)
        if (digest := request.query.get("digest")) is not None:  # a monolithic upload that could never complete
            names.check_digest(digest)


async def before_chunk(request: web.Request, params: Params) -> None:
    """A chunk for a session that does not exist (or not in this repository) is refused before its body."""
    require_writable(request)
    await require_space(request)
    await registry(request).upload(params.name, params["uuid"])


async def start_upload(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    logic = registry(request)
    mount, source = request.query.get("mount"), request.query.get("from")
    # A mount the caller may not do (a bad name, or no pull right on `from`) is an ordinary upload, as the spec asks.
    if mount is not None and source and names.is_name(source) and may_pull(request, source):
        mounted = names.check_digest(mount)
        if await logic.mount(params.name, mounted, source):
            return _created(params.name, mounted)
    await require_space(request)  # a mount needs none: only a new upload from here on
    requested = request.query.get("digest")
    if requested is not None:
        digest = names.check_digest(requested)
        await logic.put_blob(params.name, digest, body.chunks(request))
        return _created(params.name, digest)
    upload = await logic.start_upload(params.name, user(request))
    return web.Response(status=202, headers=_upload_headers(params.name, upload.id, 0))


async def upload_status(request: web.Request, params: Params) -> web.StreamResponse:
    upload = await registry(request).upload(params.name, params["uuid"])
    return web.Response(status=204, headers=_upload_headers(params.name, upload.id, upload.size))


async def patch_upload(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    await require_space(request)
    start, chunks = _chunk(request)
    logic = registry(request)
    size = await logic.append_upload(params.name, params["uuid"], chunks, start, body.arrived(request))
    return web.Response(status=202, headers=_upload_headers(params.name, params["uuid"], size))


async def put_upload(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    requested = request.query.get("digest")
    if requested is None:
        raise RegistryError(DIGEST_INVALID, "the digest query parameter is required to complete an upload")
    digest = names.check_digest(requested)
    chunks, start = None, None
    if request.can_read_body and body.declared_length(request) != 0:
        await require_space(request)
        start, chunks = _chunk(request)
    await registry(request).finish_upload(params.name, params["uuid"], digest, chunks, start)
    return _created(params.name, digest)


async def cancel_upload(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    logic = registry(request)
    upload = await logic.upload(params.name, params["uuid"])
    await logic.cancel_upload(upload)
    return web.Response(status=204)
