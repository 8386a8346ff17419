"""prometheus_client's multiprocess mode for the run: every process that counts writes its own memory-mapped files
in one directory, and a scrape in any process sums them all, so one scrape sees the whole registry.

The master makes the directory once per run, before workers start (they inherit it through the environment and,
when forked, the value class set here), and removes it when the run ends: files of an earlier run must never be
summed into this one. A worker that dies leaves its files, which keeps its counts in the totals, as counters must.
"""

from __future__ import annotations

import os
import shutil

from prometheus_client import multiprocess, values

from ..registry import process_identity

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "docker-registry-metrics-"
OWNER = process_identity.OWNER
"""The file in a run directory naming the master that made it (prometheus_client reads only `*.db` files)."""


class _ProcessId:
    """This process's id, read once and again in a forked child: prometheus_client asks for it on every update
    (to notice a fork), and `os.getpid()` is a system call each time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


_process_id = _ProcessId()


def begin_run() -> str:
    """Make the run's directory and switch this process (and its future children) to multiprocess values."""
    directory = os.environ.get(ENVIRONMENT)
    if directory and os.path.isdir(directory):
        return directory
    directory = process_identity.owned_directory(PREFIX)  # and those of earlier runs killed with SIGKILL removed
    os.environ[ENVIRONMENT] = directory
    values.ValueClass = values.MultiProcessValue(_process_id)  # type: ignore[no-untyped-call]
    return directory


def end_run(directory: str) -> None:
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
    shutil.rmtree(directory, ignore_errors=True)
    if os.environ.get(ENVIRONMENT) == directory:
        del os.environ[ENVIRONMENT]


def forget_process(directory: str, pid: int) -> None:
    """After process `pid` died: drop its gauges of the `live*` modes (what it last saw is no longer so); its
    counters and histograms stay in the totals."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def current() -> str | None:
    """The run's directory, if the runtime began one."""
    directory = os.environ.get(ENVIRONMENT)
    return directory if directory and os.path.isdir(directory) else None
