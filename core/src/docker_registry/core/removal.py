"""Many local files deleted at once, with the directories they leave empty: the filesystem driver's `remove_many`.

Each deletion mostly waits: for the filesystem's journal and the directory's lock, and on a filesystem mounted
with `discard` for the disk to discard each freed block (`blkdev_issue_discard`, twice per blob: its file's block
and its directory's). So many go at once, in threads (`THREADS`).

The driver runs this module as a script, in a process of its own (`python -I -S removal.py ROOT [KEEP...]`, the
files' full paths on stdin, NUL-separated): it imports nothing but the standard library, so it starts in about
20 ms. Threads of the caller's own process would take the GIL back after every syscall, and in a garbage
collection the caller's other thread runs SQL all the while, so each removal waited for the switch interval and
the SQL for the removers: measured on 2 cores, the SQL beside them took 5 to 16 times as long as alone
(`bench/README.md`, "gc12").

On failure the script prints `errno NUL filename NUL message` and exits with `FAILED`.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Sequence
from typing import AnyStr

THREADS = 32
"""Removing threads. On 2 cores with a virtual disk mounted with `discard`, 9,900 blobs took 1.20 s with 32 against
1.65 s with 16 (64: 1.05 s), and beyond 32 the journal's commits gain nothing."""
FAILED = 3
"""The script's exit status when a removal failed (it printed which)."""


def remove_all(root: AnyStr, fulls: Sequence[AnyStr], keep: Sequence[AnyStr] = (), threads: int = THREADS) -> None:
    """Delete the files at `fulls` (below `root`; a missing one or a directory is skipped) and prune the directories
    left empty up to `root`, never removing `root` or a directory in `keep`. Raises the first other `OSError`.

    Each thread takes a run of the sorted paths, so the threads work in different directories: a removal and the
    prune after it lock the parent directory, and threads in the same one would wait for each other."""
    ordered = sorted(fulls)
    size = max(1, -(-len(ordered) // threads))
    errors: list[OSError] = []

    def remove(share: Sequence[AnyStr]) -> None:
        try:
            _remove_share(root, share, keep)
        except OSError as error:
            errors.append(error)

    running = [threading.Thread(target=remove, args=(ordered[i : i + size],)) for i in range(0, len(ordered), size)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if errors:
        raise errors[0]


def _remove_share(root: AnyStr, fulls: Sequence[AnyStr], keep: Sequence[AnyStr]) -> None:
    """Each file's directory is removed after its files (sorted: they come together), and a parent that held
    several of those directories once, after all of them: a blob's `<hex>/` goes with its file, its `<xx>/` is
    tried once per share, not once per blob (that failing `rmdir` was a quarter of the deletions' CPU)."""
    inside = os.path.join(root, root[:0])  # root with a trailing separator, as str or bytes
    parents: dict[AnyStr, None] = {}  # in order, without repeats
    for directory, files in itertools.groupby(fulls, key=os.path.dirname):
        removed = False
        for full in files:
            try:
                os.unlink(full)
                removed = True
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # nothing there, or a directory: not an object
        if not removed or not directory.startswith(inside) or directory in keep:
            continue  # nothing removed, or the root itself, or kept
        try:
            os.rmdir(directory)
        except OSError:
            continue  # not empty: nothing above it is either
        parents[os.path.dirname(directory)] = None
    for parent in parents:
        prune(root, parent, keep)


def prune(root: AnyStr, directory: AnyStr, keep: Sequence[AnyStr] = ()) -> None:
    """Remove `directory` and each parent up to (not including) `root` while empty, stopping at one in `keep`."""
    inside = os.path.join(root, root[:0])
    while directory.startswith(inside) and directory != root and directory not in keep:
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)


def main(argv: Sequence[str]) -> int:
    """`ROOT [KEEP...]`, the full paths on stdin: see the module's docstring."""
    root, *keep = (os.fsencode(arg) for arg in argv)
    fulls = [full for full in sys.stdin.buffer.read().split(b"\0") if full]
    try:
        remove_all(root, fulls, keep)
    except OSError as error:
        filename = os.fsencode(error.filename) if error.filename is not None else b""
        sys.stdout.buffer.write(b"\0".join((str(error.errno).encode(), filename, str(error.strerror).encode())))
        return FAILED
    return 0


def reported_error(report: bytes) -> OSError:
    """The error `main` printed, for the process that ran it; one it did not print whole is still an `OSError`."""
    try:
        number, filename, message = report.split(b"\0", 2)
        return OSError(int(number), message.decode(errors="replace"), os.fsdecode(filename) or None)
    except ValueError:
        return OSError(f"a removal failed: {report.decode(errors='replace')[-500:]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
