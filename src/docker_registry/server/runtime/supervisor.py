"""The master's supervision of its worker processes: start them, restart one that dies, drain them all on a stop
signal.

Workers are forked (multiprocessing's *fork* context), deliberately, when that is safe: after `prepare()` the
master holds no database connection (prepare disposes its engine), no event loop (the one that checked the
storage driver is closed) and no other thread, so a child inherits nothing it could share by mistake, and starts
in milliseconds instead of re-importing the server (about 1.5 s of CPU per worker, at start and at every
restart). If the master does have other threads at that point (something in `prepare()` left one running),
forking could deadlock a child on a lock such a thread held, so workers are *spawned* as fresh interpreters
instead; they behave the same, only start slower.

When a notification endpoint is enabled, the master also starts and restarts the delivery process
(`runtime.delivery`) in the same way, in a slot of its own (`DELIVERY`); the workers then only record events.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections import deque
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess

from ..config import Config
from ..metrics import multiprocess
from ..notifications import setup as notifications
from .delivery import delivery_main
from .worker import STOP_SIGNALS, WORKER_STARTUP_FAILED, worker_main

log = logging.getLogger("docker_registry.server")

HEALTHY_UPTIME = 1.0
"""A worker that lived this long started fine: when it dies (an OOM kill, a crash while serving) it is restarted at
once, which happens at most once a second per worker, so no restart loop can spin."""
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
"""A worker that dies sooner is restarted after a delay that doubles with each such death in a row, up to
BACKOFF_MAX, so a worker that cannot stay up costs little while the master waits for the cause to go away."""
CRASH_LOOP_WINDOW = 60.0
CRASH_LOOP_DEATHS = 5
"""More deaths than this within the window are reported as a crash loop, once per window; the master goes on."""

KILL_GRACE = 5.0
"""Seconds a worker gets beyond http.draintimeout to exit on its own before it is killed."""

DELIVERY = -1
"""The delivery process's slot among the workers' (0, 1, ...)."""


class Supervisor:
    """The master's loop: start the workers, restart one that dies, drain them all on SIGTERM/SIGINT."""

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.context: ForkContext | SpawnContext
        if threading.active_count() == 1:
            self.context = multiprocessing.get_context("fork")
        else:
            self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.quick_deaths: dict[int, int] = {}
        """Per worker slot, deaths in a row before HEALTHY_UPTIME."""
        self.restarts: dict[int, float] = {}
        """Worker slots waiting to be restarted, with the monotonic time they are due."""
        self.deaths: deque[float] = deque()
        self.loop_reported = 0.0
        self.signals = 0
        self.hangups = 0
        """SIGHUPs received and not yet passed on to the workers."""
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.slots = [*range(count), *([DELIVERY] if notifications.in_own_process(config) else [])]
        """What the master keeps running: the workers and, when an endpoint is enabled, the delivery process."""

    def run(self) -> int:
        for sock in (self.wake_reader, self.wake_writer):
            sock.setblocking(False)
        # The wakeup fd turns a signal into readable bytes, so one wait() covers signals and worker deaths.
        previous_fd = signal.set_wakeup_fd(self.wake_writer.fileno())
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            for index in self.slots:
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

    def _on_hangup(self, signum: int, frame: object) -> None:
        self.hangups += 1

    def _pass_hangup(self) -> None:
        """Each worker re-reads the TLS certificate itself (see `tls.ReloadableTLS`)."""
        self.hangups = 0
        for index, process in self.workers.items():
            if index != DELIVERY and process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def _start(self, index: int) -> None:
        """Start a worker with the stop signals blocked (the child unblocks them, see `worker_main`)."""
        inherited = (self.wake_reader, self.wake_writer) if self.context.get_start_method() == "fork" else ()
        if index == DELIVERY:
            process = self.context.Process(target=delivery_main, args=(self.config, inherited), name="delivery")
        else:
            args = (self.config, index, inherited)
            process = self.context.Process(target=worker_main, args=args, name=f"worker-{index}")
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            self.workers[index] = process
            self.started[index] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        log.debug("%s started (pid %s, %s)", _name(index), process.pid, self.context.get_start_method())

    def _wait(self, timeout: float | None) -> None:
        waited: list[int | socket.socket] = [p.sentinel for p in self.workers.values()]
        waited.append(self.wake_reader)
        multiprocessing.connection.wait(waited, timeout)
        with contextlib.suppress(BlockingIOError):
            while self.wake_reader.recv(4096):
                pass

    def _supervise(self) -> int:
        """Until a signal: restart dead workers; returns the exit status the master should end with.

        Only a worker that could not start at all (a bad setting, the port taken: restarting cannot help) stops
        the registry; any other death is followed by a restart, delayed when the worker died young."""
        while not self.signals:
            due = min(self.restarts.values(), default=None)
            self._wait(None if due is None else max(due - time.monotonic(), 0))
            if self.signals:
                break
            if self.hangups:
                self._pass_hangup()
            for index, process in list(self.workers.items()):
                if process.is_alive():
                    continue
                process.join()
                del self.workers[index]
                _forget_gauges(process)
                if process.exitcode == WORKER_STARTUP_FAILED and index != DELIVERY:
                    log.error(
                        "worker %d (pid %s) could not start (its reason is logged above); restarting cannot help, "
                        "stopping the registry",
                        index,
                        process.pid,
                    )
                    return 1
                self._schedule_restart(index, process)
            now = time.monotonic()
            for index, when in list(self.restarts.items()):
                if when <= now and not self.signals:
                    del self.restarts[index]
                    self._start(index)
        return 0

    def _schedule_restart(self, index: int, process: BaseProcess) -> None:
        now = time.monotonic()
        lived = now - self.started.pop(index, now)
        quick = self.quick_deaths[index] = self.quick_deaths.get(index, 0) + 1 if lived < HEALTHY_UPTIME else 0
        delay = 0.0 if not quick else min(BACKOFF_FIRST * 2 ** (quick - 1), BACKOFF_MAX)
        how = _describe_exit(process.exitcode)
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - CRASH_LOOP_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > CRASH_LOOP_DEATHS and now - self.loop_reported > CRASH_LOOP_WINDOW:
            self.loop_reported = now
            log.error(
                "crash loop: %d worker deaths within %d s; the registry keeps restarting them (see the reasons "
                "logged above)",
                len(self.deaths),
                CRASH_LOOP_WINDOW,
            )
        if self.signals:  # shutting down already: no new worker
            log.warning("%s (pid %s) %s", _name(index), process.pid, how)
            return
        name = _name(index)
        log.warning("%s (pid %s) %s after %.1f s; restarting it in %.1f s", name, process.pid, how, lived, delay)
        self.restarts[index] = now + delay

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


def _name(index: int) -> str:
    return "the notification delivery process" if index == DELIVERY else f"worker {index}"


def _forget_gauges(process: BaseProcess) -> None:
    """A dead process's gauges leave the shared metrics (its counters stay, as counters must): the pending events
    it last saw must not outlive it in a scrape beside its successor's."""
    directory = multiprocess.current()
    if directory is not None and process.pid is not None:
        multiprocess.forget_process(directory, process.pid)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
