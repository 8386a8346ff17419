"""The aiohttp application: what the CLI starts in every worker process, and the one-time preparation before."""

from __future__ import annotations

from aiohttp import web

from .config import Config

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def prepare(config: Config) -> None:
    """Run once in the master process before workers fork: data directory and database migrations."""


async def _base(request: web.Request) -> web.Response:
    return web.json_response({}, headers=dict([API_VERSION_HEADER]))


def create_app(config: Config) -> web.Application:
    """The application for one worker; stores open in on_startup and close in on_cleanup."""
    app = web.Application()
    app.router.add_get("/v2/", _base)
    return app
