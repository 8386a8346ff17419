"""The API's base endpoint, the catalog and tag lists: `n`/`last` pagination with a `Link` to the next page."""

from __future__ import annotations

from aiohttp import web

from ..context import may_pull, registry
from ..pagination import page_request, paginate
from ..routing import Params

CATALOG_DEFAULT_ENTRIES = 1000
CATALOG_MAX_ENTRIES = 10_000


async def base(request: web.Request, _: Params) -> web.StreamResponse:
    return web.Response(body=b"{}", content_type="application/json")


async def catalog(request: web.Request, _: Params) -> web.StreamResponse:
    page = page_request(request.query)
    limit = min(CATALOG_DEFAULT_ENTRIES if page.n is None else page.n, CATALOG_MAX_ENTRIES)
    found = await registry(request).catalog(page.last, limit + 1)
    repositories, link = paginate(found, limit, "/v2/_catalog")
    # With access rules, the page lists only what the caller may pull: it may hold fewer than `n` names while the
    # `Link` header still leads on, from the last name of the unfiltered page.
    repositories = [name for name in repositories if may_pull(request, name)]
    return web.json_response({"repositories": repositories}, headers={"Link": link} if link else None)


async def tags_list(request: web.Request, params: Params) -> web.StreamResponse:
    page = page_request(request.query)
    found = await registry(request).tags(params.name, page.last, None if page.n is None else page.n + 1)
    tags, link = paginate(found, page.n, f"/v2/{params.name}/tags/list")
    return web.json_response({"name": params.name, "tags": tags}, headers={"Link": link} if link else None)
