"""The master's supervision of its worker processes: start them, restart one that dies, drain them all on a stop
signal.

Workers are forked (multiprocessing's *fork* context), deliberately, when that is safe: after `prepare()` the
master holds no database connection (prepare disposes its engine), no event loop (the one that checked the
storage driver is closed) and no other thread, so a child inherits nothing it could share by mistake, and starts
in milliseconds instead of re-importing the server (about 1.5 s of CPU per worker, at start and at every
restart). If the master does have other threads at that point (something in `prepare()` left one running),
forking could deadlock a child on a lock such a thread held, so workers are *spawned* as fresh interpreters
instead; they behave the same, only start slower.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import threading
import time
from collections import deque
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess

from ..config import Config
from .worker import STOP_SIGNALS, WORKER_STARTUP_FAILED, worker_main

log = logging.getLogger("docker_registry.server")

RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
"""More than RESTART_LIMIT unexpected worker deaths within RESTART_WINDOW seconds: something is broken, stop."""

KILL_GRACE = 5.0
"""Seconds a worker gets beyond http.draintimeout to exit on its own before it is killed."""


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
        """Start a worker with the stop signals blocked (the child unblocks them, see `worker_main`)."""
        inherited = (self.wake_reader, self.wake_writer) if self.context.get_start_method() == "fork" else ()
        process = self.context.Process(target=worker_main, args=(self.config, index, inherited), name=f"worker-{index}")
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            self.workers[index] = process
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        log.debug("worker %d started (pid %s, %s)", index, process.pid, self.context.get_start_method())

    def _wait(self, timeout: float | None) -> None:
        waited: list[int | socket.socket] = [p.sentinel for p in self.workers.values()]
        waited.append(self.wake_reader)
        multiprocessing.connection.wait(waited, timeout)
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
