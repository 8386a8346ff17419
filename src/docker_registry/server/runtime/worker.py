"""A worker process: builds the application, serves it on the shared port, drains it on SIGTERM.

Every worker binds the same address with SO_REUSEPORT, so the kernel spreads connections over them, and runs the
standard asyncio loop: uvloop would silently disable sendfile for blob downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from docker_registry.core.exceptions import ConfigError

from ..application import create_app, create_debug_app
from ..config import Config
from ..http.context import OBSERVERS_KEY
from . import logs, tls
from .connections import AcceptErrorReporter, ConnectionLimits, ConnectionTracker, GuardedSite

log = logging.getLogger("docker_registry.server")

WORKER_STARTUP_FAILED = 3
"""Exit status of a worker that could not start; restarting it would fail the same way, so the master stops."""

PARENT_CHECK_INTERVAL = 1.0
"""How often a worker checks that its master still lives (a SIGKILLed master cannot stop its workers)."""

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
"""Blocked in the master while it starts a worker, until the worker has its own handling of them."""


class WorkerStartupError(Exception):
    """A worker could not build the app or bind the address."""


def enter_child(config: Config, inherited: tuple[socket.socket, ...]) -> None:
    """What every child of the master (a worker, the delivery process) does first: its own signal handling, with
    the stop signals unblocked (see `worker_main`), the master's sockets closed, its own logging."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the master alone decides and sends each child a SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker re-reads the certificate on SIGHUP once serving (`_serve_app`); until then it must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for sock in inherited:
        sock.close()
    logs.setup(config.log)


def worker_main(config: Config, index: int, inherited: tuple[socket.socket, ...]) -> None:
    """Entry point of a worker process; `inherited` are the master's own sockets, closed in a forked child.

    The master starts a worker with the stop signals blocked, so one sent meanwhile waits here instead of
    reaching the master's handlers, which a forked child still has: they would swallow it, and the worker would
    serve on, untold, after shutdown began. Unblocked once the default action is back, a pending SIGTERM ends the
    worker at once; so does any SIGTERM until it is about to listen (`_serve_app`): it has nothing to drain yet.
    """
    enter_child(config, inherited)
    try:
        run_loop(config, reuse_port=True, stop_signals=(signal.SIGTERM,), parent_pid=os.getppid(), index=index)
    except WorkerStartupError as exc:
        log.error("worker %d: %s", index, exc, exc_info=traceback_worth_showing(exc))
        sys.exit(WORKER_STARTUP_FAILED)


def run_loop(
    config: Config,
    *,
    reuse_port: bool,
    stop_signals: Iterable[signal.Signals],
    parent_pid: int | None,
    index: int = 0,
) -> None:
    # The standard selector loop, explicitly: sendfile needs it, whatever event loop policy is installed.
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(_serve_app(config, reuse_port, stop_signals, parent_pid, index))


def traceback_worth_showing(exc: WorkerStartupError) -> BaseException | None:
    """A port in use or a bad setting explains itself in one line; anything else is a bug, show where."""
    cause = exc.__cause__
    return None if isinstance(cause, OSError | ConfigError) else cause


async def _serve_app(
    config: Config,
    reuse_port: bool,
    stop_signals: Iterable[signal.Signals],
    parent_pid: int | None,
    index: int,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorReporter())
    stop = asyncio.Event()
    host, port = config.http.host_port()
    in_flight = _InFlight()
    connections = ConnectionTracker()
    try:
        app = create_app(config)
        if inspect.isawaitable(app):
            app = await app
        app.middlewares[0:0] = [in_flight.middleware, connections.middleware]
        observers = [*app.get(OBSERVERS_KEY, [])]
        if config.log.accesslog:
            observers.append(logs.log_request)
        runner = web.AppRunner(
            app,
            access_log=logs.ACCESS_LOGGER,
            access_log_class=connections.access_logger_class(observers),
            shutdown_timeout=config.http.draintimeout,
        )
        await runner.setup()
        # Only a process about to serve has anything to drain: until here a stop signal keeps its default action.
        for signum in stop_signals:
            loop.add_signal_handler(signum, stop.set)
        certificates = tls.ReloadableTLS(config.http) if config.http.tls_certificate else None
        if certificates is not None:
            loop.add_signal_handler(signal.SIGHUP, certificates.reload)
        else:
            loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: nothing to re-read (no http.tls)"))
        site = GuardedSite(
            runner,
            host,
            port,
            tracker=connections,
            limits=ConnectionLimits(
                header_timeout=config.http.timeout.header,
                idle_timeout=config.http.timeout.idle,
                max_connections=config.http.maxconnections,
            ),
            reuse_port=reuse_port,
            ssl_context=certificates.listening if certificates is not None else None,
        )
        await site.start()
    except Exception as exc:  # whatever it is, it happens again on restart: report it once, cleanly
        raise WorkerStartupError(f"cannot start serving on {config.http.addr}: {exc}") from exc
    debug = await _start_debug_listener(config, app) if index == 0 else None
    # What startup made (modules, the app, the config: some 100,000 objects) lives as long as the worker: out of the
    # collector's sight, a full collection walks only what serving made since (it walked them all, 70 ms each,
    # measured with notifications on, whose batches of pull events made full collections a few times a minute).
    gc.freeze()
    log.info("worker %d ready (pid %d)", index, os.getpid())
    watcher = asyncio.create_task(watch_parent(parent_pid, stop)) if parent_pid else None
    await stop.wait()
    log.info("worker %d (pid %d) draining requests in flight", index, os.getpid())
    if watcher:
        watcher.cancel()
    in_flight.draining = True
    await site.stop()  # no new connections
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(in_flight.idle.wait(), config.http.draintimeout)
    if debug is not None:
        await debug.cleanup()
    await runner.cleanup()  # closes idle connections, lets responses being sent finish, then closes the rest
    log.info("worker %d (pid %d) stopped", index, os.getpid())


async def _start_debug_listener(config: Config, app: web.Application) -> web.AppRunner | None:
    """`http.debug.addr`, bound by the first worker only: one listener per registry, whatever the number of workers
    (the metrics it serves are every worker's). A worker restarted in that slot binds it again."""
    addr = config.http.debug.addr
    if addr is None:
        return None
    host, port = config.http.debug.host_port()
    runner = web.AppRunner(create_debug_app(config, app), access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except Exception as exc:
        await runner.cleanup()
        raise WorkerStartupError(f"cannot start the debug listener on {addr}: {exc}") from exc
    log.info("debug listener on %s (pid %d)", addr, os.getpid())
    return runner


async def watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    log.warning("master process %d is gone; stopping", parent_pid)
    stop.set()


class _InFlight:
    """Counts requests inside handlers, so a worker that stops waits for uploads still receiving their body.

    aiohttp's own graceful shutdown (`runner.cleanup()`) stops reading from every connection at once (its
    RequestHandler drops received data once closing, aio-libs/aiohttp#2298), so a chunked PATCH still streaming
    would stall until the timeout and fail. Hence: stop listening, wait here for handlers to return, and only
    then let aiohttp close connections (it still waits for responses being sent, such as blob downloads).
    """

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.count += 1
        self.idle.clear()
        try:
            response = await handler(request)
        finally:
            self.count -= 1
            if not self.count:
                self.idle.set()
        if self.draining:
            response.force_close()  # keep-alive clients reconnect, to a server that is not going away
        return response
