"""The image endpoints: json, layer and checksum (the push life cycle), ancestry, and files."""

from __future__ import annotations

import email.utils
import json
import time

from aiohttp import hdrs, web

from ..http import body, files, ranges
from ..http.context import config, registry, require_space, require_writable
from ..http.routing import Params
from ..registry.errors import SIZE_INVALID, RegistryError
from .context import caller, v1
from .images import JSON_MAX_BYTES, check_image_id
from .responses import LEGACY_HEADERS, V1Error, response

CACHE_SECONDS = 31536000
"""A complete image never changes: a year, as the original said."""
PAYLOAD_HEADERS = ("X-Docker-Checksum-Payload", "X-Docker-Payload-Checksum")
"""The payload checksum under the name docker engines send and the one the original answered with."""


def _cache_headers() -> dict[str, str]:
    return {
        "Cache-Control": f"public, max-age={CACHE_SECONDS}",
        "Expires": email.utils.formatdate(time.time() + CACHE_SECONDS, usegmt=True),
        "Last-Modified": "Thu, 01 Jan 1970 00:00:00 GMT",
    }


def _not_modified(request: web.Request) -> web.Response | None:
    """Anything under a complete image's id is immutable: whatever date the client has, it is current."""
    if hdrs.IF_MODIFIED_SINCE in request.headers:
        return web.Response(status=304, headers={**LEGACY_HEADERS, **_cache_headers()})
    return None


async def get_json(request: web.Request, params: Params) -> web.StreamResponse:
    image = await v1(request).images.complete(params["image_id"])
    cached = _not_modified(request)
    if cached is not None:
        return cached
    headers = {**_cache_headers(), "X-Docker-Size": str(image.size)}
    if image.checksum:
        headers |= dict.fromkeys(PAYLOAD_HEADERS, image.checksum)
    return response(raw=image.json, headers=headers)


async def put_json(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    check_image_id(params["image_id"])
    too_large = RegistryError(SIZE_INVALID, f"Image json larger than {JSON_MAX_BYTES} bytes", status=413)
    raw = await body.read_limited(request, JSON_MAX_BYTES, too_large)
    await v1(request).images.put_json(params["image_id"], raw, caller(request))
    return response()


async def get_ancestry(request: web.Request, params: Params) -> web.StreamResponse:
    image = await v1(request).images.complete(params["image_id"])
    cached = _not_modified(request)
    if cached is not None:
        return cached
    return response(image.ancestry, headers=_cache_headers())


async def put_layer(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    await require_space(request)
    await v1(request).images.put_layer(check_image_id(params["image_id"]), body.chunks(request), caller(request))
    return response()


async def put_checksum(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    check_image_id(params["image_id"])
    checksum = _sent_checksum(request)
    await v1(request).images.put_checksum(params["image_id"], checksum)
    return response()


def _sent_checksum(request: web.Request) -> str:
    """The payload checksum; `X-Docker-Checksum` (the tarsum of engines before 0.10) is accepted alongside it, and
    in its place when it holds a payload checksum, but a tarsum alone cannot be verified here."""
    for name in PAYLOAD_HEADERS:
        if request.headers.get(name):
            return request.headers[name]
    legacy = request.headers.get("X-Docker-Checksum", "")
    if legacy.startswith("sha256:"):
        return legacy
    if legacy:
        raise V1Error("tarsum checksums are not verified: send X-Docker-Checksum-Payload (docker 0.10 or later)")
    raise V1Error("Missing Image's checksum: X-Docker-Checksum-Payload not set")


async def get_layer(request: web.Request, params: Params) -> web.StreamResponse:
    image = await v1(request).images.complete(params["image_id"])
    cached = _not_modified(request)
    if cached is not None:
        return cached
    assert image.layer_digest is not None  # a complete image has its layer
    size = image.size or 0
    headers = {
        **LEGACY_HEADERS,
        **_cache_headers(),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    logic = registry(request)
    if config(request).storage.redirect:
        url = await logic.blob_redirect_url(image.layer_digest)
        if url:  # the driver serves the bytes itself (S3, a CDN), as the original redirected
            return web.Response(status=302, headers={**LEGACY_HEADERS, "Location": url})
    framing = ranges.framing(ranges.byte_ranges(request.headers.get(hdrs.RANGE), size), size, headers)
    layer = image.layer_digest
    return await files.send_blob(
        request,
        logic.blob_local_path(layer),
        lambda start, stop: v1(request).images.layer_stream(layer, start, stop - start),
        framing,
        size,
        headers,
        V1Error("Image layer missing from storage", 404),
    )


async def get_files(request: web.Request, params: Params) -> web.StreamResponse:
    image = await v1(request).images.complete(params["image_id"])
    listing = await v1(request).images.files(image)
    return response(raw=json.dumps(listing).encode())
