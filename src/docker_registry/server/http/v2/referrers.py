"""The referrers API: an OCI index of the manifests whose subject is a digest, with the `artifactType` filter."""

from __future__ import annotations

from aiohttp import web

from ...registry import names
from ...registry.manifests import OCI_INDEX
from ..context import registry
from ..routing import Params


async def referrers(request: web.Request, params: Params) -> web.StreamResponse:
    digest = names.check_digest(params["digest"])
    artifact_type = request.query.get("artifactType") or None
    index = await registry(request).referrers(params.name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return web.Response(body=index, content_type=None, headers={**headers, "Content-Type": OCI_INDEX})
