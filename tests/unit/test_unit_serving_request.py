"""`http.context.SERVING`: the request being served, known to code below the HTTP layer (the notifications'
recorder) while the request's middlewares and handler run, set by the errors middleware every request takes, and
forgotten once the handler is done (a keep-alive connection's task serves the next request)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import TestClient, TestServer

from docker_registry.server.http.context import SERVING
from docker_registry.server.http.errors import errors_middleware
from docker_registry.server.registry.errors import NOT_FOUND, RegistryError

seen: list[tuple[str, object]] = []


class _Logger(AbstractAccessLogger):
    """Runs in the connection's task once the response is sent."""

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        seen.append(("after", SERVING.get()))


async def _handler(request: web.Request) -> web.StreamResponse:
    seen.append(("handler", SERVING.get() is request))
    if request.path.endswith("missing"):
        raise RegistryError(NOT_FOUND, {"path": request.path})
    return web.Response(text="ok")


async def test_the_request_is_serving_while_its_handler_runs_and_not_after() -> None:
    seen.clear()
    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/{name}", _handler)
    server = TestServer(app)
    await server.start_server(access_log=logging.getLogger("test"), access_log_class=_Logger)
    async with TestClient(server) as client:
        assert (await client.get("/one")).status == 200
        assert (await client.get("/missing")).status == 404  # a handler that raises: still its request, then none
        assert (await client.get("/two")).status == 200  # the same keep-alive connection's next request
    assert seen == [("handler", True), ("after", None)] * 3
