"""The connections a worker holds: a cap below its descriptor limit, and deadlines for clients that send nothing.

aiohttp waits forever for a connection's first request, and an hour on an idle keep-alive one. A flood of silent
sockets, or of clients trickling their headers a byte at a time (slowloris), then holds every descriptor the
worker has: each accept fails with EMFILE, and the registry stops answering anyone. Here a worker:
- raises its descriptor limit to the hard limit at start-up, and caps its open connections below it: a connection
  beyond the cap is closed as soon as it is accepted, so the worker never spins on accept errors;
- closes a connection that has not completed a request's headers within `header_timeout` of being accepted, and
  one idle between requests for longer than `idle_timeout`. A connection is busy from the moment its request
  reaches the application until aiohttp has sent the whole response (a long blob download included), and no
  deadline applies to it then; a trickling request body is the body reader's to end (see `http.body`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import hdrs, web
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler

from ..application import SERVER_HEADER
from ..http import requestid
from ..http.context import Observer
from ..http.errors import http09_refusal

log = logging.getLogger("docker_registry.server")

SWEEP_INTERVAL = 1.0
RESERVED_DESCRIPTORS = 256
"""Descriptors kept free of connections: database, blob files, logs, the listening socket."""
REFUSAL_LOG_INTERVAL = 60.0
ACCEPT_ERROR = "socket.accept() out of system resource"
"""asyncio's report when accept fails with EMFILE, ENFILE, ENOBUFS or ENOMEM: it pauses that listener for a second
and reports it again at every retry, each time with a traceback."""
H = TypeVar("H")
"""A connection's handler (aiohttp's `RequestHandler` in the server, any object in the tracker's tests)."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    """Seconds from accepting a connection to the end of its first request's headers."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request."""
    max_connections: int | None = None
    """Open connections per worker; None: the descriptor limit less RESERVED_DESCRIPTORS."""


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to the hard limit (a distribution's default soft limit of 1024 is far
    below what a registry serving many clients needs); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class ConnectionTracker:
    """When each connection was accepted, whether it is inside a request, and when its last response ended."""

    def __init__(self) -> None:
        self.accepted: dict[object, float] = {}
        self.answered: dict[object, float] = {}
        """Connections that completed a request: when the last response was sent."""
        self.busy: set[object] = set()

    def overdue(self, connections: Sequence[H], limits: ConnectionLimits, now: float) -> list[H]:
        """The connections past their deadline, of those open now; what is known of closed ones is dropped (aiohttp's
        handlers take no weak references).

        A handler is made, and noted in `accepted`, one turn of the event loop before aiohttp lists it among the
        server's connections; a sweep in between drops the note. Such a connection's header deadline then counts
        from the sweep that first sees it listed, a second late at most: without a note it would never be closed.
        """
        open_connections = set(connections)
        for known in (self.accepted, self.answered):
            for handler in known.keys() - open_connections:
                del known[handler]
        self.busy &= open_connections
        late = []
        for handler in connections:
            if handler in self.busy:
                continue
            answered = self.answered.get(handler)
            if answered is None:
                overdue = now - self.accepted.setdefault(handler, now) > limits.header_timeout
            else:
                overdue = now - answered > limits.idle_timeout
            if overdue:
                late.append(handler)
        return late

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy; `access_logger_class` marks it free once the response is sent."""
        self.busy.add(request.protocol)
        return await handler(request)

    def finished(self, protocol: object) -> None:
        self.busy.discard(protocol)
        self.answered[protocol] = time.monotonic()

    def access_logger_class(self, observers: Sequence[Observer]) -> type[AccessLogger]:
        """aiohttp tells its access logger when a response has been sent entirely (or the client went away): the
        one moment a connection is known to be free again, and the request's whole duration and size are known.
        `observers` then see the request (the access log line, the metrics)."""
        tracker = self
        watching = tuple(observers)

        class TrackingAccessLogger(AccessLogger):
            @property
            def enabled(self) -> bool:
                return True

            def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
                tracker.finished(request.protocol)
                for observe in watching:
                    observe(request, response, time)

        return TrackingAccessLogger


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are capped and swept by deadline (aiohttp's TCPSite has neither)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        tracker: ConnectionTracker,
        limits: ConnectionLimits,
        reuse_port: bool,
        ssl_context: ssl.SSLContext | None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._tracker = tracker
        self._limits = limits
        self._cap = limits.max_connections or max(raise_descriptor_limit() - RESERVED_DESCRIPTORS, 64)
        self._refused = 0
        self._refusal_logged = 0.0
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host or '*'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await super().stop()

    def _accept(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._cap:
            self._refuse()
            return _Refused()
        handler = server()
        handler.__class__ = _FirstRequestHandler  # same layout (no slots of its own): only methods differ
        self._tracker.accepted[handler] = time.monotonic()
        return handler

    def _refuse(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged = now
            log.warning(
                "%d connections open, the most this worker takes: refused %d new one(s) since the last such line",
                self._cap,
                self._refused,
            )
            self._refused = 0

    async def _sweep(self) -> None:
        server = self._runner.server
        assert server is not None
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for handler in self._tracker.overdue(server.connections, self._limits, time.monotonic()):
                if handler.transport is not None:
                    handler.transport.close()


class _PlainErrorsHandler(RequestHandler):
    """aiohttp answers a request it cannot parse (oversized headers, a bad Content-Length) before any application
    sees it, in plain text that quotes the offending request bytes back, under its own `Server` header naming its
    and Python's versions. Here: the status, a short fixed body that echoes nothing, our `Server` header and the
    request's id."""

    __slots__ = ()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it, and refuses when a response is under way
        reason = "Internal Server Error" if status >= 500 else "Bad Request" if status == 400 else "Error"
        # the id its access log line shows, as on every other response (docs/observability.md)
        headers = {hdrs.SERVER: SERVER_HEADER, requestid.HEADER: requestid.request_id(request)}
        response = web.Response(status=status, text=f"{status} {reason}\n", headers=headers)
        response.force_close()
        return response


class _FirstRequestHandler(_PlainErrorsHandler):
    """A connection until its first bytes arrive. An HTTP/0.9 request line (a method and a path, no version) is
    refused at once: aiohttp's parser would wait for an end of headers that an HTTP/0.9 client never sends, and the
    client would wait for ever. Then the connection becomes a `_PlainErrorsHandler`, so later data costs nothing
    more. (A first line that arrives in pieces is left to aiohttp and `http.errors`, once a blank line follows.)"""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        handler: RequestHandler = self
        handler.__class__ = _PlainErrorsHandler
        if self.transport is not None and _is_http09_line(data):
            self.transport.write(http09_refusal())
            self.transport.close()
            return
        _PlainErrorsHandler.data_received(self, data)  # not super(): the class changed above


def _is_http09_line(data: bytes) -> bool:
    line, newline, _ = data.partition(b"\n")
    return bool(newline) and len(line.split()) == 2


class _Refused(asyncio.Protocol):
    """A connection beyond the cap: closed as soon as it is accepted, which frees its descriptor at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class AcceptErrorReporter:
    """The event loop's exception handler: out-of-resource accept errors once a minute, in one line; anything else
    as asyncio reports it. (A connection cap below the descriptor limit keeps EMFILE away; other descriptors a
    worker holds, or a lower limit than it could raise, can still bring it.)"""

    def __init__(self) -> None:
        self._logged = -REFUSAL_LOG_INTERVAL
        self._since = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self._since += 1
        now = time.monotonic()
        if now - self._logged >= REFUSAL_LOG_INTERVAL:
            log.error(
                "cannot accept connections: %s; retrying each second (%d time(s) since the last such line)",
                context.get("exception"),
                self._since,
            )
            self._logged, self._since = now, 0
