"""`serve`: the master prepares once, then runs and supervises the worker processes that share the port.

Workers are forked (multiprocessing's *fork* context), deliberately, when that is safe: after `prepare()` the
master holds no database connection (prepare disposes its engine), no event loop (the one that checked the
storage driver is closed) and no other thread, so a child inherits nothing it could share by mistake, and starts
in milliseconds instead of re-importing the server (about 1.5 s of CPU per worker, at start and at every
restart). If the master does have other threads at that point (something in `prepare()` left one running),
forking could deadlock a child on a lock such a thread held, so workers are *spawned* as fresh interpreters
instead; they behave the same, only start slower.

Every worker binds the same address with SO_REUSEPORT, so the kernel spreads connections over them, and runs the
standard asyncio loop: uvloop would silently disable sendfile for blob downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from multiprocessing.process import BaseProcess

from aiohttp import web

from docker_registry.core import exceptions
from docker_registry.core.driver import fetch
from docker_registry.core.exceptions import ConfigError

from . import logs, tls
from .app import build_driver, create_app, prepare
from .config import Config, hide_password
from .store.engine import database_url

log = logging.getLogger("docker_registry.server")

WORKER_STARTUP_FAILED = 3
"""Exit status of a worker that could not start; restarting it would fail the same way, so the master stops."""

RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
"""More than RESTART_LIMIT unexpected worker deaths within RESTART_WINDOW seconds: something is broken, stop."""

PARENT_CHECK_INTERVAL = 1.0
"""How often a worker checks that its master still lives (a SIGKILLed master cannot stop its workers)."""

KILL_GRACE = 5.0
"""Seconds a worker gets beyond http.draintimeout to exit on its own before it is killed."""

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
"""Blocked in the master while it starts a worker, until the worker has its own handling of them."""


class WorkerStartupError(Exception):
    """A worker could not build the app or bind the address."""


def serve(config: Config) -> int:
    """Run the registry until SIGTERM/SIGINT; returns the process exit status."""
    logs.setup(config.log)
    for notice in config.notices:
        log.warning("%s", notice)
    tls.server_context(config.http)  # a bad certificate fails here, once, not in every worker
    _check_driver(config)
    host, port = config.http.host_port()
    try:
        _check_address_free(host, port)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.http.addr, exc.strerror or exc)
        return 1
    try:
        prepare(config)
    except Exception as exc:
        log.error("cannot prepare the data directory and database: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1
    count = config.http.workers or os.cpu_count() or 1
    log.info(
        "docker-registry listening on %s://%s:%d with %d worker%s, storage %s, database %s",
        "https" if config.http.tls_certificate else "http",
        f"[{host}]" if host and ":" in host else host or "*",
        port,
        count,
        "" if count == 1 else "s",
        config.storage.describe(),
        hide_password(database_url(config)),
    )
    if count == 1:
        return _run_in_process(config)
    return _Supervisor(config, count).run()


def _check_driver(config: Config) -> None:
    """An unknown storage driver or a bad driver option is a configuration error (exit 2), found here, once, before
    any worker builds its own driver and dies on it. The driver built here is closed at once."""
    try:
        fetch(config.storage.driver)
    except exceptions.NotImplementedError as exc:
        raise ConfigError(f"storage.{config.storage.driver}: {exc}") from None

    async def build_and_close() -> None:
        await build_driver(config).close()

    asyncio.run(build_and_close())


def _check_address_free(host: str | None, port: int) -> None:
    """Refuse to start beside another server on the port.

    Workers bind with SO_REUSEPORT, which would silently share the port with any other SO_REUSEPORT listener of
    the same user (say a second registry with other data); a bind without it fails if anything listens there.
    """
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does; TIME_WAIT is fine
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and host is None:
                    continue  # e.g. no IPv6 on this machine: asyncio skips it the same way
                raise


def _run_in_process(config: Config) -> int:
    """One worker: serve in the master itself, no extra process."""
    try:
        _run_loop(config, reuse_port=False, stop_signals=(signal.SIGTERM, signal.SIGINT), parent_pid=None)
    except WorkerStartupError as exc:
        log.error("%s", exc, exc_info=_traceback_worth_showing(exc))
        return 1
    log.info("stopped")
    return 0


def _worker_main(config: Config, index: int, inherited: tuple[socket.socket, ...]) -> None:
    """Entry point of a worker process; `inherited` are the master's own sockets, closed in a forked child.

    The master starts a worker with the stop signals blocked, so one sent meanwhile waits here instead of
    reaching the master's handlers, which a forked child still has: they would swallow it, and the worker would
    serve on, untold, after shutdown began. Unblocked once the default action is back, a pending SIGTERM ends the
    worker at once; so does any SIGTERM until it is about to listen (`_serve_app`): it has nothing to drain yet.
    """
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the master alone decides and sends each worker a SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for sock in inherited:
        sock.close()
    logs.setup(config.log)
    try:
        _run_loop(config, reuse_port=True, stop_signals=(signal.SIGTERM,), parent_pid=os.getppid(), index=index)
    except WorkerStartupError as exc:
        log.error("worker %d: %s", index, exc, exc_info=_traceback_worth_showing(exc))
        sys.exit(WORKER_STARTUP_FAILED)


def _run_loop(
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


def _traceback_worth_showing(exc: WorkerStartupError) -> BaseException | None:
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
    stop = asyncio.Event()
    host, port = config.http.host_port()
    in_flight = _InFlight()
    try:
        app = create_app(config)
        if inspect.isawaitable(app):
            app = await app
        app.middlewares.insert(0, in_flight.middleware)
        runner = web.AppRunner(
            app,
            access_log=logs.ACCESS_LOGGER if config.log.accesslog else None,
            access_log_format=logs.ACCESS_LOG_FORMAT,
            shutdown_timeout=config.http.draintimeout,
        )
        await runner.setup()
        # Only a process about to serve has anything to drain: until here a stop signal keeps its default action.
        for signum in stop_signals:
            loop.add_signal_handler(signum, stop.set)
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, ssl_context=tls.server_context(config.http))
        await site.start()
    except Exception as exc:  # whatever it is, it happens again on restart: report it once, cleanly
        raise WorkerStartupError(f"cannot start serving on {config.http.addr}: {exc}") from exc
    log.info("worker %d ready (pid %d)", index, os.getpid())
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    await stop.wait()
    log.info("worker %d (pid %d) draining requests in flight", index, os.getpid())
    if watcher:
        watcher.cancel()
    in_flight.draining = True
    await site.stop()  # no new connections
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(in_flight.idle.wait(), config.http.draintimeout)
    await runner.cleanup()  # closes idle connections, lets responses being sent finish, then closes the rest
    log.info("worker %d (pid %d) stopped", index, os.getpid())


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
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


class _Supervisor:
    """The master's loop: start the workers, restart one that dies, drain them all on SIGTERM/SIGINT."""

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.deaths: deque[float] = deque()
        self.signals = 0
        self.wake_reader, self.wake_writer = socket.socketpair()

    def run(self) -> int:
        for sock in (self.wake_reader, self.wake_writer):
            sock.setblocking(False)
        # The wakeup fd turns a signal into readable bytes, so one wait() covers signals and worker deaths.
        previous_fd = signal.set_wakeup_fd(self.wake_writer.fileno())
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self.count):
                if self.signals:
                    break
                self._start(index)
            status = self._supervise()
            return self._shutdown(status)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self.wake_reader.close()
            self.wake_writer.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1

    def _start(self, index: int) -> None:
        """Start a worker with the stop signals blocked (the child unblocks them, see `_worker_main`)."""
        inherited = (self.wake_reader, self.wake_writer) if self.context.get_start_method() == "fork" else ()
        process = self.context.Process(
            target=_worker_main, args=(self.config, index, inherited), name=f"worker-{index}"
        )
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            self.workers[index] = process
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        log.debug("worker %d started (pid %s, %s)", index, process.pid, self.context.get_start_method())

    def _wait(self, timeout: float | None) -> None:
        sentinels: list[object] = [p.sentinel for p in self.workers.values()]
        multiprocessing.connection.wait([*sentinels, self.wake_reader], timeout)
        with contextlib.suppress(BlockingIOError):
            while self.wake_reader.recv(4096):
                pass

    def _supervise(self) -> int:
        """Until a signal: restart dead workers; returns the exit status the master should end with."""
        while not self.signals:
            self._wait(None)
            if self.signals:
                break
            for index, process in list(self.workers.items()):
                if process.is_alive():
                    continue
                process.join()
                del self.workers[index]
                how = _describe_exit(process.exitcode)
                if process.exitcode == WORKER_STARTUP_FAILED:
                    log.error("worker %d (pid %s) could not start; stopping the registry", index, process.pid)
                    return 1
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and self.deaths[0] < now - RESTART_WINDOW:
                    self.deaths.popleft()
                if len(self.deaths) > RESTART_LIMIT:
                    log.error(
                        "worker %d (pid %s) %s; %d workers died within %d s, stopping the registry",
                        index,
                        process.pid,
                        how,
                        len(self.deaths),
                        RESTART_WINDOW,
                    )
                    return 1
                if self.signals:  # shutting down already: no new worker
                    log.warning("worker %d (pid %s) %s", index, process.pid, how)
                    continue
                log.warning("worker %d (pid %s) %s; restarting it", index, process.pid, how)
                self._start(index)
        return 0

    def _shutdown(self, status: int) -> int:
        # Counted before "shutting down" is logged: a signal sent once that line is out is an impatient second one.
        signals_before = self.signals
        drain = self.config.http.draintimeout
        if self.workers:
            log.info("shutting down: letting requests in flight finish (up to %g s)", drain)
        for process in self.workers.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + drain + KILL_GRACE
        while any(p.is_alive() for p in self.workers.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.signals > max(signals_before, 1):
                log.warning("workers still busy; killing them")
                status = status or 1
                break
            self._wait(remaining)
        for process in self.workers.values():
            if process.is_alive():
                process.kill()
            process.join()
        log.info("stopped")
        return status


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
