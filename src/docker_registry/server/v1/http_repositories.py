"""Repositories and their tags, as the original served them; deletion and properties."""

from __future__ import annotations

from aiohttp import web

from ..http import body
from ..http.context import require_delete, require_writable
from ..http.routing import Params
from ..registry import strict_json
from ..registry.errors import SIZE_INVALID, RegistryError
from .context import caller, v1
from .repositories import check_tag, repository_name, tag_json
from .responses import V1Error, response

SMALL_BODY_BYTES = 1024 * 1024


async def small_body(request: web.Request) -> bytes:
    too_large = RegistryError(SIZE_INVALID, f"request body larger than {SMALL_BODY_BYTES} bytes", status=413)
    return await body.read_limited(request, SMALL_BODY_BYTES, too_large)


async def get_tags(request: web.Request, params: Params) -> web.StreamResponse:
    return response(await v1(request).repositories.tags(repository_name(params.name)))


async def get_tag(request: web.Request, params: Params) -> web.StreamResponse:
    image_id = await v1(request).repositories.tag(repository_name(params.name), check_tag(params["tag"]))
    return response(image_id)


async def get_tag_json(request: web.Request, params: Params) -> web.StreamResponse:
    found = await v1(request).repositories.tag_json(repository_name(params.name), check_tag(params["tag"]))
    return response(found)


async def get_repository_json(request: web.Request, params: Params) -> web.StreamResponse:
    """Deprecated in the original in favour of the tag's json: the json of `latest`."""
    return response(await v1(request).repositories.tag_json(repository_name(params.name), "latest"))


async def put_tag(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    repository, tag = repository_name(params.name), check_tag(params["tag"])
    raw = await small_body(request)
    try:
        image_id = strict_json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        image_id = None
    if not image_id or not isinstance(image_id, str):
        raise V1Error("Invalid data: the image id as a JSON string expected")
    described = tag_json(request.headers.get("User-Agent", ""))
    await v1(request).repositories.put_tag(repository, tag, image_id, described, caller(request))
    return response()


async def delete_tag(request: web.Request, params: Params) -> web.StreamResponse:
    require_delete(request)
    await v1(request).repositories.delete_tag(repository_name(params.name), check_tag(params["tag"]))
    return response()


async def delete_repository(request: web.Request, params: Params) -> web.StreamResponse:
    require_delete(request)
    await v1(request).repositories.delete_repository(repository_name(params.name))
    return response()


async def get_properties(request: web.Request, params: Params) -> web.StreamResponse:
    return response(await v1(request).repositories.properties(repository_name(params.name)))


async def put_properties(request: web.Request, params: Params) -> web.StreamResponse:
    require_writable(request)
    repository = repository_name(params.name)
    await v1(request).repositories.put_properties(repository, await small_body(request))
    return response()
