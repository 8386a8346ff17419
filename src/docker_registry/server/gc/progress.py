"""Progress of a collection: a bar on a terminal (tqdm), plain log lines otherwise (a cron job's mail, a log file,
the server's own log)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Never, Protocol, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("docker_registry.gc")


class Progress(Protocol):
    def start(self, phase: str, total: int | None) -> None:
        """A phase begins; `total` is how many items it goes through, when known."""

    def advance(self, count: int) -> None:
        """`count` more items of the current phase are done."""

    def finish(self) -> None:
        """The current phase is over."""


class LogProgress:
    """One line when a phase starts and one when it ends, with its count."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.INFO) -> None:
        self._log = logger
        self._level = level
        self._phase = ""
        self._done = 0

    def start(self, phase: str, total: int | None) -> None:
        self._phase, self._done = phase, 0
        self._log.log(self._level, "%s%s", phase, "" if total is None else f": {total} to go through")

    def advance(self, count: int) -> None:
        self._done += count

    def finish(self) -> None:
        self._log.log(self._level, "%s: done (%d)", self._phase, self._done)


class BarProgress:
    """A tqdm bar per phase, on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm[Never] | None = None

    def start(self, phase: str, total: int | None) -> None:
        from tqdm import tqdm  # here: a run without a terminal (cron, the background collector) never needs it

        self.finish()
        self._bar = tqdm(total=total, desc=phase, file=self._stream, unit="", leave=True, dynamic_ncols=True)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
