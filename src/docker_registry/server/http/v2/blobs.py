"""Blobs: HEAD, GET (sendfile from a local disk, a redirect to the driver's URL, or a stream; whole or the `Range`
asked, one window or several), DELETE."""

from __future__ import annotations

from aiohttp import hdrs, web

from docker_registry.core.digest import Digest

from ...registry import names
from ...registry.errors import BLOB_UNKNOWN, RegistryError
from .. import files, ranges
from ..context import config, registry, require_delete
from ..routing import Params


def _blob_headers(digest: Digest) -> dict[str, str]:
    return {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}


async def head_blob(request: web.Request, params: Params) -> web.StreamResponse:
    digest = names.check_digest(params["digest"])
    blob = await registry(request).blob(params.name, digest)
    headers = _blob_headers(digest)
    if files.none_match(request, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = "application/octet-stream"
    headers["Content-Length"] = str(blob.size)
    return web.Response(headers=headers)


async def get_blob(request: web.Request, params: Params) -> web.StreamResponse:
    digest = names.check_digest(params["digest"])
    logic = registry(request)
    blob = await logic.blob(params.name, digest)
    headers = _blob_headers(digest)
    if files.none_match(request, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    if blob.manifest is not None:
        return web.Response(body=blob.manifest.content, content_type="application/octet-stream", headers=headers)
    if config(request).storage.redirect:
        url = await logic.blob_redirect_url(digest)
        if url:
            return web.Response(status=307, headers={"Location": url, "Docker-Content-Digest": str(digest)})
    header = request.headers.get(hdrs.RANGE) if files.range_applies(request, headers["ETag"]) else None
    headers["Content-Type"] = "application/octet-stream"
    framing = ranges.framing(ranges.byte_ranges(header, blob.size), blob.size, headers)
    missing = RegistryError(BLOB_UNKNOWN, {"digest": str(digest)}, message="blob missing from storage")
    return await files.send_blob(
        request,
        logic.blob_local_path(digest),
        lambda start, stop: logic.blob_stream(digest, start, stop - start),
        framing,
        blob.size,
        headers,
        missing,
    )


async def delete_blob(request: web.Request, params: Params) -> web.StreamResponse:
    require_delete(request)
    digest = names.check_digest(params["digest"])
    await registry(request).delete_blob(params.name, digest)
    return web.Response(status=202)
