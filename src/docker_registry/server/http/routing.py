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

from aiohttp import hdrs, web

from ..registry import names
from ..registry.errors import NOT_FOUND, UNSUPPORTED, RegistryError
from .context import config

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
Route = tuple[re.Pattern[str], Mapping[str, Handler]]


def route(pattern: str, methods: Mapping[str, Handler]) -> Route:
    return re.compile(pattern), methods


async def dispatch(routes: list[Route], request: web.Request) -> web.StreamResponse:
    """Find the route for the request's path and method; unknown paths are 404, unknown methods 405."""
    path = request.rel_url.raw_path
    for pattern, methods in routes:
        match = pattern.match(path)
        if match is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            if config(request).storage.readonly and request.method in WRITE_METHODS:
                raise RegistryError(UNSUPPORTED, "the registry is in read-only mode")
            raise RegistryError(
                UNSUPPORTED, f"method {request.method} not allowed here", headers={hdrs.ALLOW: ", ".join(methods)}
            )
        captured = match.groupdict()
        name = names.check_name(captured.pop("name")) if "name" in captured else ""
        return await handler(request, Params(name, {key: unquote(value) for key, value in captured.items()}))
    raise RegistryError(NOT_FOUND, {"path": path[:300]})
