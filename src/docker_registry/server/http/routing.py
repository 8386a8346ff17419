"""Routes as regular expressions over the undecoded path, tried in order.

Repository names contain slashes, so a route is a pattern over the whole path rather than aiohttp's segments. The
raw path is matched, so `%2F` or `%2e%2e` in a name can never turn into `/` or `..`; the name is validated once,
here, before any handler runs, and the other captured parts are percent-decoded for the handler to check.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import HttpVersion11, hdrs, web

from ..registry import names
from ..registry.errors import NOT_FOUND, UNSUPPORTED, RegistryError
from .context import GUARD_KEY, config
from .errors import error_response

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NAME = r"(?P<name>.+?)"
"""The repository name group of a route's pattern."""


@dataclass(frozen=True, slots=True)
class Params:
    """What the route's pattern captured: `name` already validated, the other parts percent-decoded."""

    name: str
    parts: Mapping[str, str]

    def __getitem__(self, key: str) -> str:
        return self.parts[key]


Handler = Callable[[web.Request, Params], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]
    name: str
    """A fixed name for the route (`manifest`, `blob`, ...): what metrics and logs group requests by, never the
    path itself, whose names and digests are unbounded."""


ROUTE_NAME: web.RequestKey[str] = web.RequestKey("docker_registry.route", str)
"""The request key holding the name of the route it matched (absent when it matched none)."""
BodyCheck = Callable[[web.Request, Params], Awaitable[None]]
"""What a handler checks before it reads a body: run first when the client waits for `100 Continue`."""

V1_ROUTES_KEY: web.AppKey[list[Route]] = web.AppKey("v1_routes", list)
"""The route table of the legacy v1 API when it is mounted (`/v1/...` and `/_ping`), for the auth gate."""
V1_PREFIXES = ("/v1/", "/_ping")


def table_for(app: web.Application, path: str, default: list[Route]) -> list[Route]:
    """The route table a path belongs to: v1's for its paths when v1 is mounted, else `default` (v2's)."""
    if path.startswith(V1_PREFIXES):
        return app.get(V1_ROUTES_KEY, default)
    return default


def route(name: str, pattern: str, methods: Mapping[str, Handler]) -> Route:
    return Route(re.compile(pattern), methods, name)


def resolve(routes: list[Route], request: web.Request) -> tuple[Handler, Params]:
    """The handler for the request's path and method; unknown paths are 404, unknown methods 405."""
    path = request.rel_url.raw_path
    for candidate in routes:
        match = candidate.pattern.match(path)
        if match is None:
            continue
        request[ROUTE_NAME] = candidate.name
        methods = candidate.methods
        handler = methods.get(request.method)
        if handler is None:
            if config(request).storage.readonly and request.method in WRITE_METHODS:
                raise RegistryError(UNSUPPORTED, "the registry is in read-only mode")
            raise RegistryError(
                UNSUPPORTED, f"method {request.method} not allowed here", headers={hdrs.ALLOW: ", ".join(methods)}
            )
        captured = match.groupdict()
        name = names.check_name(captured.pop("name")) if "name" in captured else ""
        return handler, Params(name, {key: unquote(value) for key, value in captured.items()})
    raise RegistryError(NOT_FOUND, {"path": path[:300]})


async def dispatch(routes: list[Route], request: web.Request) -> web.StreamResponse:
    handler, params = resolve(routes, request)
    return await handler(request, params)


def expect_continue(
    routes: list[Route], checks: Mapping[Handler, BodyCheck]
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """aiohttp's handler of `Expect: 100-continue`, which by default invites every body at once: this one first
    resolves the route and runs the handler's body check, so a client learns of an unknown upload session, a bad
    name or a read-only registry before it sends its body."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11 or request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return error_response(RegistryError(UNSUPPORTED, "unsupported Expect", status=417), request.method)
        try:
            guard = request.app.get(GUARD_KEY)
            if guard is not None:  # credentials and rights first: a refused client must not learn of sessions
                await guard(request)
            handler, params = resolve(routes, request)
            check = checks.get(handler)
            if check is not None:
                await check(request, params)
        except RegistryError as e:
            response = error_response(e, request.method)
            response.force_close()  # the body the client holds back is never read
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the answer's size
        return None

    return expect
