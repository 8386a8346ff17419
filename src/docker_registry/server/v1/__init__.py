"""The legacy v1 API of the original Python docker-registry (0.9), standalone mode, on the same store as v2 and
bridged to it (see docs/v1.md).

Its routes are mounted under `/v1/` and `/_ping` only, with a table of their own: a v2 request never tries a v1
pattern. Errors are answered in the original's shape, `{"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..http.routing import NAME, V1_ROUTES_KEY, Handler, Route, expect_continue, resolve, route
from ..registry.errors import RegistryError
from . import http_images, http_index, http_repositories
from .context import v1_context
from .responses import V1Error, error, from_registry_error

IMAGE = r"^/v1/images/(?P<image_id>[^/]+)"
REPOSITORY = rf"^/v1/repositories/{NAME}"


def _route(name: str, pattern: str, methods: Mapping[str, Handler]) -> Route:
    """A route that answers HEAD wherever it answers GET, as the original's Flask routes did."""
    if "GET" in methods:
        methods = {**methods, "HEAD": methods["GET"]}
    return route(name, pattern, methods)


ROUTES: list[Route] = [
    # pulls first (json, layer, ancestry of every image), then pushes
    _route(
        "v1_image_json",
        rf"{IMAGE}/json$",
        {"GET": http_images.get_json, "PUT": http_images.put_json},
    ),
    _route(
        "v1_image_layer",
        rf"{IMAGE}/layer$",
        {"GET": http_images.get_layer, "PUT": http_images.put_layer},
    ),
    _route("v1_image_ancestry", rf"{IMAGE}/ancestry$", {"GET": http_images.get_ancestry}),
    _route("v1_image_checksum", rf"{IMAGE}/checksum$", {"PUT": http_images.put_checksum}),
    _route("v1_image_files", rf"{IMAGE}/files$", {"GET": http_images.get_files}),
    _route(
        "v1_tag_json",
        rf"{REPOSITORY}/tags/(?P<tag>[^/]+)/json$",
        {"GET": http_repositories.get_tag_json},
    ),
    _route(
        "v1_tag",
        rf"{REPOSITORY}/tags/(?P<tag>[^/]+)$",
        {
            "GET": http_repositories.get_tag,
            "PUT": http_repositories.put_tag,
            "DELETE": http_repositories.delete_tag,
        },
    ),
    _route(
        "v1_tags",
        rf"{REPOSITORY}/tags/?$",
        {"GET": http_repositories.get_tags, "DELETE": http_repositories.delete_repository},
    ),
    _route(
        "v1_repository_images",
        rf"{REPOSITORY}/images$",
        {"GET": http_index.get_images, "PUT": http_index.put_images, "DELETE": http_index.delete_images},
    ),
    _route("v1_repository_json", rf"{REPOSITORY}/json$", {"GET": http_repositories.get_repository_json}),
    _route(
        "v1_repository_properties",
        rf"{REPOSITORY}/properties$",
        {"GET": http_repositories.get_properties, "PUT": http_repositories.put_properties},
    ),
    _route("v1_repository_auth", rf"{REPOSITORY}/auth$", {"PUT": http_index.put_auth}),
    _route(
        "v1_repository",
        rf"{REPOSITORY}/?$",
        {"PUT": http_index.put_repository, "DELETE": http_repositories.delete_repository},
    ),
    _route("v1_ping", r"^/v1/_ping$", {"GET": http_index.ping}),
    _route("ping", r"^/_ping$", {"GET": http_index.ping}),
    _route("v1_search", r"^/v1/search$", {"GET": http_index.search}),
    _route("v1_users", r"^/v1/users/?$", {"GET": http_index.get_users, "POST": http_index.post_users}),
    _route("v1_user", r"^/v1/users/(?P<user>[^/]+)/?$", {"PUT": http_index.put_user}),
]


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Route and run, answering every refusal in the original's error shape."""
    try:
        handler, params = resolve(ROUTES, request)
        return await handler(request, params)
    except V1Error as e:
        return error(e.message, e.status, e.headers)
    except RegistryError as e:
        return from_registry_error(e)


def add_routes(app: web.Application) -> None:
    """Mount the v1 API; call after the stores' cleanup context is added (the v1 logic is built over them)."""
    app.cleanup_ctx.append(v1_context)
    app[V1_ROUTES_KEY] = ROUTES
    expect = expect_continue(ROUTES, {})
    app.router.add_route("*", "/_ping", dispatch, expect_handler=expect)
    app.router.add_route("*", "/v1/{tail:.*}", dispatch, expect_handler=expect)
