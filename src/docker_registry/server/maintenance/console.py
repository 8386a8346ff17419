"""What a long maintenance command shows while it runs: a progress bar on a terminal (tqdm), plain log lines when
the output goes to a file or a pipe (a cron job, a CI log), problems as they are found, and a closing summary.

Progress and notices go to stderr; problems and the summary go to stdout, so `docker-registry fsck > report.txt`
keeps exactly what an operator acts on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Never, TextIO

from tqdm import tqdm

LOG_EVERY = 10.0
"""Seconds between progress lines when there is no terminal to draw a bar on."""


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Phase:
    """One step of a command (say "blobs"): objects done out of a total, and bytes read on the way."""

    def __init__(self, console: Console, label: str, total: int | None) -> None:
        self.console = console
        self.label = label
        self.total = total
        self.done = 0
        self.bytes = 0
        self._bar: tqdm[Never] | None = None
        self._logged = time.monotonic()
        if console.interactive:
            self._bar = tqdm(total=total, desc=label, unit="obj", file=console.progress, leave=False)

    def add_bytes(self, count: int) -> None:
        self.bytes += count

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            if self.bytes:
                self._bar.set_postfix_str(human_bytes(self.bytes), refresh=False)
        elif time.monotonic() - self._logged >= self.console.log_every:
            self._logged = time.monotonic()
            self.console.note(self.status())

    def status(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        read = f", {human_bytes(self.bytes)} read" if self.bytes else ""
        return f"{self.label}: {self.done}{of}{read}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.console.note(f"{self.status()}, done")


class Console:
    def __init__(
        self,
        command: str,
        out: TextIO | None = None,
        progress: TextIO | None = None,
        interactive: bool | None = None,
        log_every: float = LOG_EVERY,
    ) -> None:
        self.command = command
        self.out = out or sys.stdout
        self.progress = progress or sys.stderr
        self.interactive = self.progress.isatty() if interactive is None else interactive
        self.log_every = log_every
        self.problems = 0
        self.started = time.monotonic()

    @contextmanager
    def phase(self, label: str, total: int | None = None) -> Iterator[Phase]:
        phase = Phase(self, label, total)
        try:
            yield phase
        finally:
            phase.close()

    def note(self, message: str) -> None:
        """A progress or information line (stderr), printed above the bar on a terminal."""
        self._write(f"{self.command}: {message}", self.progress)

    def problem(self, message: str) -> None:
        """Something the operator must know about (stdout); counted for the summary and the exit status."""
        self.problems += 1
        self._write(f"problem: {message}", self.out)

    def say(self, message: str) -> None:
        """A line of the report (stdout) that is not a problem: what a repair did, images a problem breaks."""
        self._write(message, self.out)

    def summary(self, counts: dict[str, int], read_bytes: int) -> None:
        """The closing line: every count, the problems, the bytes read and the time taken."""
        parts = [f"{value} {name}" for name, value in counts.items()]
        parts.append(f"{self.problems} problem{'s' if self.problems != 1 else ''}")
        parts.append(f"{human_bytes(read_bytes)} read")
        parts.append(f"{time.monotonic() - self.started:.1f}s")
        self._write(f"{self.command} summary: " + ", ".join(parts), self.out)

    def _write(self, line: str, stream: TextIO) -> None:
        if self.interactive:
            tqdm.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)
