"""The v2 API (OCI distribution-spec v1.1, Docker Registry HTTP API v2): routing and thin handlers.

Repository names contain slashes, so routes are regular expressions over the whole path, tried in order; the
captured parts are validated before the registry logic sees them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import hdrs, web

from docker_registry.core import exceptions

from . import blobfile, body, names, negotiation
from .config import Config
from .errors import (
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NOT_FOUND,
    RANGE_INVALID,
    UNSUPPORTED,
    RegistryError,
)
from .manifests import OCI_INDEX
from .pagination import page_request, paginate
from .ranges import byte_range
from .registry import Registry
from .uploads import progress_headers

REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)
CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)
CATALOG_DEFAULT_ENTRIES = 1000
CATALOG_MAX_ENTRIES = 10_000
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


def _registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


def _config(request: web.Request) -> Config:
    return request.app[CONFIG_KEY]


def _check_writable(request: web.Request) -> None:
    if _config(request).storage.readonly:
        raise RegistryError(UNSUPPORTED, "the registry is in read-only mode")


def _check_delete(request: web.Request) -> None:
    _check_writable(request)
    if not _config(request).storage.delete_enabled:
        raise RegistryError(UNSUPPORTED, "deletes are disabled")


# --- base and catalog ------------------------------------------------------------------------------------------
async def base(request: web.Request, _: dict[str, str]) -> web.StreamResponse:
    return web.Response(body=b"{}", content_type="application/json")


async def catalog(request: web.Request, _: dict[str, str]) -> web.StreamResponse:
    page = page_request(request.query)
    limit = min(CATALOG_DEFAULT_ENTRIES if page.n is None else page.n, CATALOG_MAX_ENTRIES)
    found = await _registry(request).catalog(page.last, limit + 1)
    repositories, link = paginate(found, limit, "/v2/_catalog")
    return web.json_response({"repositories": repositories}, headers={"Link": link} if link else None)


async def tags_list(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    name = names.check_name(m["name"])
    page = page_request(request.query)
    found = await _registry(request).tags(name, page.last, None if page.n is None else page.n + 1)
    tags, link = paginate(found, page.n, f"/v2/{name}/tags/list")
    return web.json_response({"name": name, "tags": tags}, headers={"Link": link} if link else None)


# --- manifests -------------------------------------------------------------------------------------------------
async def get_manifest(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    name = names.check_name(m["name"])
    reference = names.check_reference(m["reference"])
    digest, manifest = await _registry(request).get_manifest(name, reference)
    if not negotiation.accepts(request.headers.getall("Accept", []), manifest.media_type):
        raise RegistryError(
            MANIFEST_UNKNOWN,
            {"reference": reference, "mediaType": manifest.media_type},
            message=f"{manifest.media_type} found, but accept header does not support it",
        )
    etag = f'"{digest}"'
    headers = {"Docker-Content-Digest": digest, "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=manifest.content, content_type=None, headers={**headers, "Content-Type": manifest.media_type}
    )


async def put_manifest(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_writable(request)
    name = names.check_name(m["name"])
    reference = names.check_reference(m["reference"])
    limit = _config(request).validation.manifest_max_bytes
    too_large = RegistryError(MANIFEST_INVALID, f"manifest larger than {limit} bytes", status=413)
    raw = await body.read_limited(request, limit, too_large)
    manifest = await _registry(request).put_manifest(name, reference, raw, request.headers.get("Content-Type", ""))
    headers = {
        "Location": f"/v2/{name}/manifests/{manifest.digest}",
        "Docker-Content-Digest": manifest.digest,
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = manifest.subject.digest
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_delete(request)
    name = names.check_name(m["name"])
    reference = names.check_reference(m["reference"])
    await _registry(request).delete_manifest(name, reference)
    return web.Response(status=202)


# --- referrers -------------------------------------------------------------------------------------------------
async def referrers(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    name = names.check_name(m["name"])
    digest = str(names.check_digest(m["digest"]))
    artifact_type = request.query.get("artifactType") or None
    index = await _registry(request).referrers(name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return web.Response(body=index, content_type=None, headers={**headers, "Content-Type": OCI_INDEX})


# --- blobs -----------------------------------------------------------------------------------------------------
def _blob_headers(digest: str) -> dict[str, str]:
    return {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}


async def head_blob(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    name = names.check_name(m["name"])
    digest = str(names.check_digest(m["digest"]))
    blob = await _registry(request).blob(name, digest)
    headers = _blob_headers(digest)
    if blobfile.none_match(request, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = "application/octet-stream"
    headers["Content-Length"] = str(blob.size)
    return web.Response(headers=headers)


async def get_blob(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    if request.method == "HEAD":
        return await head_blob(request, m)
    name = names.check_name(m["name"])
    digest = str(names.check_digest(m["digest"]))
    registry = _registry(request)
    blob = await registry.blob(name, digest)
    headers = _blob_headers(digest)
    if blobfile.none_match(request, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    if blob.manifest is not None:
        return web.Response(body=blob.manifest.content, content_type="application/octet-stream", headers=headers)
    if _config(request).storage.redirect:
        url = await registry.blob_redirect_url(digest)
        if url:
            return web.Response(status=307, headers={"Location": url, "Docker-Content-Digest": digest})
    header = request.headers.get(hdrs.RANGE)
    window = byte_range(header, blob.size)
    local = registry.blob_local_path(digest)
    if local is not None and (header is None or window is not None):
        # sendfile; FileResponse answers the same single range itself (a Range it would refuse goes below)
        # aiohttp would answer a missing file with a bare 404; one stat of a hot inode costs less than a thread hop
        if not os.path.isfile(local):  # noqa: ASYNC240
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest}, message="blob missing from storage")
        headers["Content-Type"] = "application/octet-stream"
        return blobfile.BlobFileResponse(local, headers=headers)
    return await _stream_blob(request, registry, digest, blob.size, window, headers)


async def _stream_blob(
    request: web.Request,
    registry: Registry,
    digest: str,
    size: int,
    window: tuple[int, int] | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    status = 200
    start, stop = window or (0, size)
    if window is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        status = 206
    stream = aiter(registry.blob_stream(digest, start, stop - start))
    try:
        first = await anext(stream, b"")  # a blob missing from storage is still an error the client can read
    except exceptions.FileNotFoundError:
        raise RegistryError(BLOB_UNKNOWN, {"digest": digest}, message="blob missing from storage") from None
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = stop - start
    await response.prepare(request)
    await response.write(first)
    async for chunk in stream:
        await response.write(chunk)
    await response.write_eof()
    return response


async def delete_blob(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_delete(request)
    name = names.check_name(m["name"])
    digest = str(names.check_digest(m["digest"]))
    await _registry(request).delete_blob(name, digest)
    return web.Response(status=202)


# --- uploads ---------------------------------------------------------------------------------------------------
def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    location = f"/v2/{name}/blobs/uploads/{upload_id}"
    return {"Location": location, "Docker-Upload-UUID": upload_id, **progress_headers(size)}


def _created(name: str, digest: str) -> web.Response:
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


async def start_upload(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_writable(request)
    name = names.check_name(m["name"])
    registry = _registry(request)
    mount, source = request.query.get("mount"), request.query.get("from")
    if mount is not None and source and names.is_name(source):  # else a normal upload, as the spec asks
        digest = str(names.check_digest(mount))
        if await registry.mount(name, digest, source):
            return _created(name, digest)
    requested = request.query.get("digest")
    if requested is not None:
        digest = names.check_digest(requested)
        await registry.put_blob(name, digest, body.chunks(request))
        return _created(name, str(digest))
    upload = await registry.start_upload(name)
    return web.Response(status=202, headers=_upload_headers(name, upload.id, 0))


def _content_range(request: web.Request) -> int | None:
    value = request.headers.get("Content-Range")
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value.strip())
    if not match or int(match[2]) < int(match[1]):
        raise RegistryError(RANGE_INVALID, f"invalid Content-Range {value[:60]!r}")
    length = body.declared_length(request)
    if length is not None and length != int(match[2]) - int(match[1]) + 1:
        raise RegistryError(RANGE_INVALID, f"Content-Range {value[:60]!r} does not match Content-Length {length}")
    return int(match[1])


async def upload_status(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    name = names.check_name(m["name"])
    upload = await _registry(request).upload(name, m["uuid"])
    return web.Response(status=204, headers=_upload_headers(name, upload.id, upload.size))


async def patch_upload(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_writable(request)
    name = names.check_name(m["name"])
    start = _content_range(request)
    size = await _registry(request).append_upload(name, m["uuid"], body.chunks(request), start)
    return web.Response(status=202, headers=_upload_headers(name, m["uuid"], size))


async def put_upload(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_writable(request)
    name = names.check_name(m["name"])
    requested = request.query.get("digest")
    if requested is None:
        raise RegistryError(DIGEST_INVALID, "the digest query parameter is required to complete an upload")
    digest = names.check_digest(requested)
    chunks, start = None, None
    if request.can_read_body and body.declared_length(request) != 0:
        start = _content_range(request)
        chunks = body.chunks(request)
    await _registry(request).finish_upload(name, m["uuid"], digest, chunks, start)
    return _created(name, str(digest))


async def cancel_upload(request: web.Request, m: dict[str, str]) -> web.StreamResponse:
    _check_writable(request)
    name = names.check_name(m["name"])
    registry = _registry(request)
    upload = await registry.upload(name, m["uuid"])
    await registry.cancel_upload(upload)
    return web.Response(status=204)


# --- routing ---------------------------------------------------------------------------------------------------
_NAME = r"(?P<name>.+?)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    # Pulls first: they are most of the traffic. No path matches two of these patterns (a blob digest is never
    # "uploads"), so the order only decides how soon a request finds its route.
    (
        re.compile(rf"^/v2/{_NAME}/manifests/(?P<reference>[^/]+)$"),
        {"GET": get_manifest, "HEAD": get_manifest, "PUT": put_manifest, "DELETE": delete_manifest},
    ),
    (
        re.compile(rf"^/v2/{_NAME}/blobs/(?P<digest>(?!uploads$)[^/]+)$"),
        {"GET": get_blob, "HEAD": head_blob, "DELETE": delete_blob},
    ),
    (re.compile(r"^/v2/?$"), {"GET": base, "HEAD": base}),
    (re.compile(r"^/v2/_catalog$"), {"GET": catalog, "HEAD": catalog}),
    (re.compile(rf"^/v2/{_NAME}/tags/list$"), {"GET": tags_list, "HEAD": tags_list}),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads/?$"), {"POST": start_upload}),
    (
        re.compile(rf"^/v2/{_NAME}/blobs/uploads/(?P<uuid>[^/]+)$"),
        {
            "GET": upload_status,
            "HEAD": upload_status,
            "PATCH": patch_upload,
            "PUT": put_upload,
            "DELETE": cancel_upload,
        },
    ),
    (re.compile(rf"^/v2/{_NAME}/referrers/(?P<digest>[^/]+)$"), {"GET": referrers, "HEAD": referrers}),
]


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Find the route for the request's path and method; unknown paths are 404, unknown methods 405."""
    path = request.rel_url.raw_path  # undecoded: `%2F` or `%2e%2e` in a name must not become `/` or `..`
    for pattern, methods in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            if _config(request).storage.readonly and request.method in WRITE_METHODS:
                raise RegistryError(UNSUPPORTED, "the registry is in read-only mode")
            raise RegistryError(
                UNSUPPORTED, f"method {request.method} not allowed here", headers={hdrs.ALLOW: ", ".join(methods)}
            )
        parts = {key: value if key == "name" else unquote(value) for key, value in match.groupdict().items()}
        return await handler(request, parts)
    raise RegistryError(NOT_FOUND, {"path": path[:300]})


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
