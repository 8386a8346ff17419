"""Blobs: HEAD, GET (sendfile from a local disk, a redirect to the driver's URL, or a stream; one `Range`), DELETE."""

from __future__ import annotations

import os

from aiohttp import hdrs, web

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest

from ...registry import names
from ...registry.errors import BLOB_UNKNOWN, RegistryError
from ...registry.service import Registry
from .. import files
from ..context import config, registry, require_delete
from ..ranges import byte_range, streamed_window
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
    header = request.headers.get(hdrs.RANGE)
    window = byte_range(header, blob.size)
    local = logic.blob_local_path(digest)
    if local is not None:
        # sendfile of the window parsed above
        # aiohttp would answer a missing file with a bare 404; one stat of a hot inode costs less than a thread hop
        if not os.path.isfile(local):  # noqa: ASYNC240
            raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)}, message="blob missing from storage")
        headers["Content-Type"] = "application/octet-stream"
        return files.BlobFileResponse(local, window, headers)
    return await _stream_blob(request, logic, digest, blob.size, window, headers)


async def _stream_blob(
    request: web.Request,
    logic: Registry,
    digest: Digest,
    size: int,
    window: tuple[int, int] | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    status, start, stop = streamed_window(window, size, headers)
    stream = aiter(logic.blob_stream(digest, start, stop - start))
    try:
        first = await anext(stream, b"")  # a blob missing from storage is still an error the client can read
    except exceptions.FileNotFoundError:
        raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)}, message="blob missing from storage") from None
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/octet-stream"
    return await files.send_stream(request, response, stop - start, first, stream)


async def delete_blob(request: web.Request, params: Params) -> web.StreamResponse:
    require_delete(request)
    digest = names.check_digest(params["digest"])
    await registry(request).delete_blob(params.name, digest)
    return web.Response(status=202)
