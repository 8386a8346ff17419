"""The web UI (issue 14, docs/ui.md): browse repositories, tags, manifests, configs and referrers, and delete tags
and manifests, in server-rendered HTML at `/ui/` with one small bundled script and stylesheet (nothing fetched
from elsewhere). It uses the registry logic and the store's browse queries, and the registry's own users and
rules (`access.Accounts`, lent by the composition root).

Modules: access (viewer and rules), sessions (signed cookies, CSRF), images (manifests and configs read for
people), rendering (templates, escaping, security headers), downloads (a blob as an attachment), pages (the
handlers), static files below `static/`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

from ..config import Config
from ..http.routing import ROUTE_NAME
from .access import Accounts, LoginsBlocked
from .pages import PREFIX, UI

__all__ = ["PREFIX", "Accounts", "LoginsBlocked", "add_routes"]
from .rendering import SECURITY_HEADERS, environment
from .sessions import Signer

STATIC = Path(__file__).parent / "static"


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = (STATIC / name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        response = web.Response(body=body, content_type=content_type, charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return handler


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTE = "ui"
"""The `route` the request metrics count the UI's requests under (they matched no API route: counted as `none`,
the label of 404s)."""


def _counted(handler: Handler) -> Handler:
    async def named(request: web.Request) -> web.StreamResponse:
        request[ROUTE_NAME] = ROUTE
        return await handler(request)

    return named


def _plain_refusals(handler: Handler) -> Handler:
    """Refusals (401 with the Basic prompt, 403, 429, 501) as plain text with their headers: the error middleware
    would turn them into the API's JSON errors and drop the challenge."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = web.Response(status=e.status, text=e.text or e.reason, content_type="text/plain")
            response.headers.update(
                {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
            )
            response.headers.update(SECURITY_HEADERS)
            return response

    return wrapped


def add_routes(
    app: web.Application,
    config: Config,
    accounts: Accounts | None,
    health: Callable[[], Mapping[str, bool]],
) -> None:
    """Mount the UI under `/ui/`. `accounts` None with `auth` configured: an outside token server only, which
    the UI cannot log in to (it then answers 501 with the reason)."""
    ui = UI(
        config,
        environment(),
        Signer(config.ui.secret, config.ui.sessionlifetime),
        accounts,
        config.auth is not None,
        health,
    )

    async def to_overview(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"{PREFIX}/")

    app.router.add_get(PREFIX, _counted(to_overview))
    app.router.add_get(f"{PREFIX}/", _counted(_plain_refusals(ui.overview)))
    app.router.add_get(f"{PREFIX}/repositories", _counted(_plain_refusals(ui.repositories)))
    app.router.add_route("*", f"{PREFIX}/repositories/{{path:.+}}", _counted(_plain_refusals(ui.repository_path)))
    app.router.add_route("*", f"{PREFIX}/login", _counted(_plain_refusals(ui.login)))
    app.router.add_get(f"{PREFIX}/login/basic", _counted(_plain_refusals(ui.login_basic)))
    app.router.add_post(f"{PREFIX}/logout", _counted(_plain_refusals(ui.logout)))
    app.router.add_get(f"{PREFIX}/static/ui.css", _counted(_static("ui.css", "text/css")))
    app.router.add_get(f"{PREFIX}/static/ui.js", _counted(_static("ui.js", "text/javascript")))
    app.router.add_get(f"{PREFIX}/static/favicon.svg", _counted(_static("favicon.svg", "image/svg+xml")))
    app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", _counted(_plain_refusals(ui.no_such_page)))
