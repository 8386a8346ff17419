"""Every process's `/proc/<pid>/stat`, for the helpers that find a server's processes or add up their CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the stat fields after the parenthesised command name: state, ppid, pgrp, ...) of every process still
    there when read; field n of stat(5) is `fields[n - 3]` (utime: `fields[11]`)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2 :].split()
