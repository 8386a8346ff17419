"""Who holds an upload claim: an identity of this process that another process on the same host can check.

A worker killed mid-chunk (OOM killer, SIGKILL, a crash) cannot release its claim. A claim names its process as
`<boot id>/<pid namespace>/<pid>/<start time>`; a process that shares the boot and the pid namespace can tell from
`/proc` that the claimant is gone (or that its pid now belongs to another process) and take the session over at
once. Claims from other hosts or containers cannot be checked here; the writer lease covers them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_cached: tuple[int, str | None] | None = None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None or ")" not in stat:
        return None
    return stat.rsplit(")", 1)[1].split()


def this_process() -> str | None:
    """This process's identity, or None where /proc cannot tell (then only the lease frees a dead claim)."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:  # a forked worker is another process
        boot, namespace, fields = _read("/proc/sys/kernel/random/boot_id"), _pid_namespace(), _stat_fields(pid)
        identity = f"{boot}/{namespace}/{pid}/{fields[19]}" if boot and namespace and fields else None
        _cached = (pid, identity)
    return _cached[1]


def is_dead(identity: str | None) -> bool:
    """True only when `identity` is a process of this host and pid namespace that no longer runs."""
    mine = this_process()
    if identity is None or mine is None:
        return False
    parts = identity.split("/")
    if len(parts) != 4 or parts[:2] != mine.split("/")[:2] or not parts[2].isdigit():
        return False
    pid, start = int(parts[2]), parts[3]
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X") or fields[19] != start


OWNER = "owner"
"""The file in an `owned_directory` naming the process that made it."""


def owned_directory(prefix: str) -> str:
    """A new temporary directory `<prefix>...` whose `OWNER` file names this process. The directories of the same
    prefix whose owner is dead are removed first: killed with SIGKILL, it could not remove its own (an owner of
    another host or pid namespace sharing the temporary directory is never taken for dead)."""
    for entry in os.scandir(tempfile.gettempdir()):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        identity = _read(os.path.join(entry.path, OWNER))
        if identity is not None and is_dead(identity):
            shutil.rmtree(entry.path, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=prefix)
    identity = this_process()
    if identity is not None:
        with open(os.path.join(directory, OWNER), "w", encoding="ascii") as owner:
            owner.write(identity)
    return directory
