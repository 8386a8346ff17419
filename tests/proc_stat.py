"""Every process's `/proc/<pid>/stat`, for the helpers that find a server's processes or add up their CPU."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
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


def owned_directories(root: Path, prefix: str, names: Iterable[str]) -> dict[str, str] | None:
    """Directories `<prefix><name>` under `root` as `process_identity.owned_directory` leaves them, each with an
    owner file: "alive" names this process, "abandoned" a process that has exited, "elsewhere" a process of another
    host. Their owners by name; None where /proc cannot tell this process's identity."""
    from docker_registry.server.registry import process_identity

    me, dead = process_identity.this_process(), dead_identity()
    if me is None or dead is None:
        return None
    known = {"abandoned": dead, "alive": me, "elsewhere": f"x/y/{dead.split('/')[2]}/1"}
    owners = {name: known[name] for name in names}
    for name, owner in owners.items():
        (root / f"{prefix}{name}").mkdir()
        (root / f"{prefix}{name}" / process_identity.OWNER).write_text(owner)
    return owners


def dead_identity() -> str | None:
    """The `process_identity` of a process of this host that has exited; None where /proc cannot tell."""
    from docker_registry.server.registry import process_identity

    me = process_identity.this_process()
    if me is None:
        return None
    dead = subprocess.Popen(["true"])
    dead.wait()
    boot, namespace, _pid, start = me.split("/")
    return f"{boot}/{namespace}/{dead.pid}/{start}"
