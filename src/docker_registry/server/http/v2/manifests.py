"""Manifests by tag or digest: GET and HEAD with `Accept` negotiation, PUT (with the spec's `?tag=`), DELETE."""

from __future__ import annotations

from aiohttp import web

from docker_registry.core.digest import Digest

from ...registry import names
from ...registry.errors import MANIFEST_INVALID, MANIFEST_UNKNOWN, RegistryError
from .. import body, negotiation
from ..context import config, registry, require_delete, require_writable
from ..files import none_match
from ..routing import Params


def _pulled_reference(reference: str) -> str | Digest:
    """A reference that is neither a tag nor a digest names no manifest: 404 MANIFEST_UNKNOWN, as Distribution
    answers and the conformance suite expects (a push of one is still TAG_INVALID)."""
    try:
        return names.check_reference(reference)
    except RegistryError:
        raise RegistryError(MANIFEST_UNKNOWN, {"reference": reference[:300]}) from None


async def get_manifest(request: web.Request, params: Params) -> web.StreamResponse:
    reference = _pulled_reference(params["reference"])
    logic = registry(request)
    digest, manifest = await logic.get_manifest(params.name, reference)
    accept = request.headers.getall("Accept", [])
    if not negotiation.accepts(accept, manifest.media_type):
        # by tag, a Docker manifest list's linux/amd64 image, as Distribution serves to clients that predate lists
        fallback = None if isinstance(reference, Digest) else await logic.default_platform(params.name, manifest)
        if fallback is None or not negotiation.accepts(accept, fallback[1].media_type):
            raise RegistryError(
                MANIFEST_UNKNOWN,
                {"reference": str(reference), "mediaType": manifest.media_type},
                message=f"{manifest.media_type} found, but accept header does not support it",
            )
        digest, manifest = fallback
    etag = f'"{digest}"'
    headers = {"Docker-Content-Digest": str(digest), "ETag": etag}
    if none_match(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=manifest.content, content_type=None, headers={**headers, "Content-Type": manifest.media_type}
    )


async def before_body(request: web.Request, params: Params) -> None:
    require_writable(request)
    names.check_reference(params["reference"])
    for tag in request.query.getall("tag", []):
        names.check_tag(tag)


async def put_manifest(request: web.Request, params: Params) -> web.StreamResponse:
    await before_body(request, params)
    reference = names.check_reference(params["reference"])
    extra_tags = request.query.getall("tag", [])
    limit = config(request).validation.manifest_max_bytes
    too_large = RegistryError(MANIFEST_INVALID, f"manifest larger than {limit} bytes", status=413)
    raw = await body.read_limited(request, limit, too_large)
    content_type = request.headers.get("Content-Type", "")
    manifest = await registry(request).put_manifest(params.name, reference, raw, content_type, extra_tags)
    headers = {
        "Location": f"/v2/{params.name}/manifests/{manifest.digest}",
        "Docker-Content-Digest": str(manifest.digest),
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    response = web.Response(status=201, headers=headers)
    for tag in extra_tags:
        response.headers.add("OCI-Tag", tag)
    return response


async def delete_manifest(request: web.Request, params: Params) -> web.StreamResponse:
    require_delete(request)
    reference = names.check_reference(params["reference"])
    await registry(request).delete_manifest(params.name, reference)
    return web.Response(status=202)
