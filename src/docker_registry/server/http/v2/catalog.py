"""The API's base endpoint, the catalog and tag lists: `n`/`last` pagination with a `Link` to the next page."""

from __future__ import annotations

from aiohttp import web

from ..context import may_pull, registry
from ..pagination import page_request, paginate
from ..routing import Params

CATALOG_DEFAULT_ENTRIES = 1000
CATALOG_MAX_ENTRIES = 10_000
CATALOG_READ = 1000
"""Names read from the store at a time (with access rules a page of `n=1` may need many)."""
CATALOG_SCAN = 100_000
"""Most repository names one catalog request reads looking for those the caller may pull."""


async def base(request: web.Request, _: Params) -> web.StreamResponse:
    return web.Response(body=b"{}", content_type="application/json")


async def catalog(request: web.Request, _: Params) -> web.StreamResponse:
    page = page_request(request.query)
    limit = min(CATALOG_DEFAULT_ENTRIES if page.n is None else page.n, CATALOG_MAX_ENTRIES)
    if limit == 0:
        return web.json_response({"repositories": []})
    repositories, link = paginate(await _visible(request, page.last, limit + 1), limit, "/v2/_catalog")
    return web.json_response({"repositories": repositories}, headers={"Link": link} if link else None)


async def _visible(request: web.Request, last: str | None, wanted: int) -> list[str]:
    """Up to `wanted` names after `last` that the caller may pull, read from the store a page at a time: with
    access rules, a page filtered after reading would hold fewer names than asked while its `Link` named the last
    name read, one the caller may not see. After `CATALOG_SCAN` names read, the listing ends with what was found:
    a caller who may see few of that many repositories may not be shown the last of them."""
    logic, found, scanned = registry(request), list[str](), 0
    read = max(wanted, CATALOG_READ)
    while len(found) < wanted and scanned < CATALOG_SCAN:
        names = await logic.catalog(last, read)
        found += [name for name in names if may_pull(request, name)]
        scanned += len(names)
        if len(names) < read:
            break
        last = names[-1]
    return found[:wanted]


async def tags_list(request: web.Request, params: Params) -> web.StreamResponse:
    page = page_request(request.query)
    found = await registry(request).tags(params.name, page.last, None if page.n is None else page.n + 1)
    tags, link = paginate(found, page.n, f"/v2/{params.name}/tags/list")
    return web.json_response({"name": params.name, "tags": tags}, headers={"Link": link} if link else None)
