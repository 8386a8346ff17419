"""The `/proc/<pid>/task/<tid>/stat` fields of every thread of some processes, for the scripts that split a
server's CPU by thread (`profile_writes.py`, `notify_attribution.py`, `gc_phases.py`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def tasks(pids: Iterable[int]) -> Iterator[tuple[int, int, list[str]]]:
    """(pid, tid, the stat fields after the parenthesised command name) of every thread still there when read;
    field n of stat(5) is `fields[n - 3]` (utime: `fields[11]`, stime: `fields[12]`, nice: `fields[16]`)."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            yield pid, int(tid), stat[stat.rindex(")") + 2 :].split()
