"""The standalone index the original served beside its registry: ping, repository creation and index images,
tokens and endpoints, users, and search."""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from ..http.context import config, may_pull, require_delete, require_writable
from ..http.routing import Params
from ..registry import strict_json
from .context import caller, v1
from .http_repositories import small_body
from .repositories import repository_name
from .responses import V1Error, response

SEARCH_PAGE_DEFAULT = 25
SEARCH_PAGE_MAX = 100
SEARCH_RESULT_EXTRAS = {"star_count": 0, "is_official": False, "is_automated": False}
"""What Docker Hub's answers carry beside the original's `name` and `description`: `docker search` shows them."""
_NUMBER = re.compile(r"[0-9]{1,9}")


async def ping(request: web.Request, _params: Params) -> web.StreamResponse:
    return response({}, headers={"X-Docker-Registry-Standalone": "true"})


def _index_headers(request: web.Request, repository: str, access: str) -> dict[str, str]:
    """`X-Docker-Endpoints` (this registry, as the client reached it) and, when the client asks for one with
    `X-Docker-Token: true`, a token as the original's standalone index made (it grants nothing: no auth, or Basic
    credentials, decide). With auth configured no token is given, so engines keep sending their credentials."""
    headers = {"X-Docker-Endpoints": request.host}
    if request.headers.get("X-Docker-Token", "").lower() == "true" and config(request).auth is None:
        token = f'Token signature={secrets.token_hex(16)},repository="{repository}",access={access}'
        headers |= {"X-Docker-Token": token, "WWW-Authenticate": token}
    return headers


async def put_repository(request: web.Request, params: Params) -> web.StreamResponse:
    """`PUT /v1/repositories/<repo>/`: the start of a push; the body lists the images to come."""
    require_writable(request)
    repository = repository_name(params.name)
    await v1(request).repositories.put_index_images(repository, await small_body(request), caller(request))
    return response("", headers=_index_headers(request, repository, "write"))


async def put_images(request: web.Request, params: Params) -> web.StreamResponse:
    """The end of a push: the images with their checksums."""
    require_writable(request)
    repository = repository_name(params.name)
    await v1(request).repositories.put_index_images(repository, await small_body(request), caller(request))
    return response("", 204, headers=_index_headers(request, repository, "write"))


async def get_images(request: web.Request, params: Params) -> web.StreamResponse:
    repository = repository_name(params.name)
    images = await v1(request).repositories.index_images(repository)
    return response(images, headers=_index_headers(request, repository, "read"))


async def delete_images(request: web.Request, params: Params) -> web.StreamResponse:
    """As in the original, nothing happens: the list goes when the repository is deleted."""
    require_delete(request)
    repository = repository_name(params.name)
    return response("", 204, headers=_index_headers(request, repository, "delete"))


async def put_auth(request: web.Request, params: Params) -> web.StreamResponse:
    repository_name(params.name)
    return response("OK")


async def get_users(request: web.Request, _params: Params) -> web.StreamResponse:
    """`docker login` checks credentials here (the auth gate already did)."""
    return response("OK")


async def post_users(request: web.Request, _params: Params) -> web.StreamResponse:
    """Sign-up. Users come from the htpasswd file, so with auth every user "already exists": the answer that makes
    a docker 1.x `login` go on to check the credentials with `GET /v1/users/`."""
    raw = await small_body(request)
    try:
        strict_json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise V1Error("Error Decoding JSON") from None
    if config(request).auth is not None:
        return response("Username or email already exists", 400)
    return response("User Created", 201)


async def put_user(request: web.Request, _params: Params) -> web.StreamResponse:
    return response("", 204)


def _number(request: web.Request, key: str, default: int, maximum: int) -> int:
    value = request.query.get(key)
    if value is None or value == "":
        return default
    if not _NUMBER.fullmatch(value) or not 1 <= int(value) <= maximum:
        raise V1Error(f"Invalid {key}: a number from 1 to {maximum} expected")
    return int(value)


async def search(request: web.Request, _params: Params) -> web.StreamResponse:
    """Repositories whose name or description contains `q`, v1- and v2-pushed alike, only those the caller may
    pull; `n` per page (25, at most 100), page `page` (from 1)."""
    term = request.query.get("q", "")
    if len(term) > 255:
        raise V1Error("Invalid q: at most 255 characters")
    limit = _number(request, "n", SEARCH_PAGE_DEFAULT, SEARCH_PAGE_MAX)
    page = _number(request, "page", 1, 10**9)
    found = [
        {"name": name, "description": description, **SEARCH_RESULT_EXTRAS}
        for name, description in await v1(request).repositories.search(term)
        if may_pull(request, name)
    ]
    start = (page - 1) * limit
    results = found[start : start + limit]
    pages = (len(found) + limit - 1) // limit
    return response(
        {
            "query": term,
            "num_results": len(found),
            "num_pages": pages,
            "page": page,
            "page_size": limit,
            "results": results,
        }
    )
