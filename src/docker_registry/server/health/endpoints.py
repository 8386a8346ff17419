"""The health endpoints, answered from the monitor's memory.

On the main port: `/healthz` (liveness: the worker's event loop answers) and `/readyz` (readiness: every check
passes), both without credentials, so probes need none. On the debug listener: `/debug/health`, in Distribution's
shape (`{}` when healthy, else each failing check's name and error, with 503). With `health.unavailable`, API
requests are answered 503 UNAVAILABLE while a check fails, as Distribution does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..http.routing import ROUTE_NAME
from ..registry.errors import UNAVAILABLE, RegistryError
from .monitor import HealthMonitor

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
JSON = "application/json"
_ALIVE = json.dumps({"status": "alive"}).encode()


class _Answers:
    """Readiness bodies, rebuilt only when a check's state changes (the monitor's generation)."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self._monitor = monitor
        self._generation = -1
        self._readiness = (200, b"")
        self._debug = (200, b"")

    def _rebuild(self) -> None:
        monitor = self._monitor
        if self._generation == monitor.generation:
            return
        self._generation = monitor.generation
        failing = monitor.failing()
        # No error texts on the main port, which anyone may reach: they can name paths, hosts and users. They are
        # in the log and on the private debug listener.
        checks = {
            name: {"healthy": name not in failing, "failures": state.failures, "checked": state.checked}
            for name, state in monitor.states.items()
        }
        status = 503 if failing else 200
        body = {"status": "unavailable" if failing else "ready", "failing": failing, "checks": checks}
        self._readiness = (status, json.dumps(body).encode())
        self._debug = (status, json.dumps({name: monitor.states[name].error for name in failing}).encode())

    def readiness(self) -> tuple[int, bytes]:
        self._rebuild()
        return self._readiness

    def debug(self) -> tuple[int, bytes]:
        self._rebuild()
        return self._debug


def _json(status: int, body: bytes, method: str) -> web.Response:
    response = web.Response(status=status, body=None if method == "HEAD" else body, content_type=JSON)
    response.headers["Cache-Control"] = "no-store"
    return response


def middleware(monitor: HealthMonitor, refuse_when_unhealthy: bool) -> Middleware:
    """Answers `/healthz` and `/readyz` before authentication (probes carry no credentials) and, when asked,
    refuses API requests while unhealthy."""
    answers = _Answers(monitor)

    @web.middleware
    async def health(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path == LIVENESS_PATH and request.method in ("GET", "HEAD"):
            request[ROUTE_NAME] = "healthz"
            return _json(200, _ALIVE, request.method)
        if path == READINESS_PATH and request.method in ("GET", "HEAD"):
            request[ROUTE_NAME] = "readyz"
            return _json(*answers.readiness(), request.method)
        if refuse_when_unhealthy:
            failing = monitor.failing()
            if failing:
                message = f"the registry is unhealthy: {', '.join(failing)} failing"
                raise RegistryError(UNAVAILABLE, message=message, headers={"Retry-After": "10"})
        return await handler(request)

    return health


def debug_health(monitor: HealthMonitor) -> Callable[[web.Request], Awaitable[web.Response]]:
    answers = _Answers(monitor)

    async def handler(request: web.Request) -> web.Response:
        return _json(*answers.debug(), request.method)

    return handler
