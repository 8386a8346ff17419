"""A blob of a repository as a download, for the links from an image's descriptors (config, layers): its bytes
streamed from storage through the registry logic, never held in memory, and marked so a browser saves them instead
of rendering them (attachment, octet-stream, nosniff, the UI's Content-Security-Policy)."""

from __future__ import annotations

from aiohttp import web

from docker_registry.core.digest import Digest

from ..http.files import send_stream
from ..registry.service import Registry
from .rendering import SECURITY_HEADERS


def _headers(digest: Digest) -> dict[str, str]:
    return {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="{digest.algorithm}-{digest.encoded}"',
        "Docker-Content-Digest": str(digest),
        "Cache-Control": "no-store",
    }


async def download(request: web.Request, registry: Registry, repository: str, digest: Digest) -> web.StreamResponse:
    """The blob's bytes; RegistryError when the repository does not serve it, the driver's FileNotFoundError
    (before anything is sent) when it is missing from storage."""
    blob = await registry.blob(repository, digest)
    headers = _headers(digest)
    if blob.manifest is not None:  # the digest names a manifest: its bytes come from the metadata store
        return web.Response(body=blob.manifest.content, content_type="application/octet-stream", headers=headers)
    stream = aiter(registry.blob_stream(digest, 0, blob.size))
    first = await anext(stream, b"")  # a blob missing from storage is still a page, not a cut-off download
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/octet-stream"
    return await send_stream(request, response, blob.size, first, stream)
