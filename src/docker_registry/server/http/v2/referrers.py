"""The referrers API: an OCI index of the manifests whose subject is a digest, with the `artifactType` filter, a
page at a time (`last`, and a `Link` to the next page when more remain)."""

from __future__ import annotations

from urllib.parse import quote, unquote

from aiohttp import web

from ...registry import names
from ...registry.manifests import OCI_INDEX
from ..context import registry
from ..routing import Params


async def referrers(request: web.Request, params: Params) -> web.StreamResponse:
    digest = names.check_digest(params["digest"])
    artifact_type = _raw_query_value(request, "artifactType")
    last = request.query.get("last")
    after = names.check_digest(last) if last else None
    index, more_after = await registry(request).referrers(params.name, digest, artifact_type, after)
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    if more_after is not None:
        query = f"last={quote(str(more_after), safe='')}"
        if artifact_type:
            query += f"&artifactType={quote(artifact_type, safe='')}"
        headers["Link"] = f'</v2/{params.name}/referrers/{digest}?{query}>; rel="next"'
    return web.Response(body=index, content_type=None, headers=headers)


def _raw_query_value(request: web.Request, name: str) -> str | None:
    """The parameter percent-decoded only: a media type's `+` (`application/spdx+json`, written unencoded as in
    the spec's own example) is not the space that form decoding would make of it."""
    for pair in request.rel_url.raw_query_string.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value) or None
    return None
