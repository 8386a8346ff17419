"""Room for the database on a full disk: a file of a few MiB kept beside it, given up the moment a commit finds
the disk full, so the writes that free space (deleting tags, manifests, blob links) can still be recorded.

A delete barely grows a SQLite database, but its log and the pages it rewrites need room; on a disk filled to the
last byte even a delete fails. The reserve comes back once there is room for it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from .engine import sqlite_file

log = logging.getLogger(__name__)

RESERVE_BYTES = 8 * 1024 * 1024
RETRY_SECONDS = 10.0
GIVEN_UP_RETRY_SECONDS = 1.0


class SpaceReserve:
    def __init__(self, path: str, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self._checked = 0.0

    def ensure(self, retry_after: float = RETRY_SECONDS) -> None:
        """Create the reserve if it is missing and the disk has room for it (at most every `retry_after`)."""
        now = time.monotonic()
        if now - self._checked < retry_after:
            return
        self._checked = now
        if os.path.exists(self.path):
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return  # another worker made it
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, self.size)
            os.fsync(fd)
        except OSError:  # no room yet
            os.close(fd)
            # another worker's commit may have given it up meanwhile (`release`); this runs after a commit, and
            # must not fail a write that is done
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        os.close(fd)

    def present(self) -> bool:
        return os.path.exists(self.path)

    def given_up(self) -> bool:
        """Whether the reserve is gone (given up to a commit on a full disk, not made again yet): new blob bytes
        are then refused, so that the room it left goes to the deletes that free space. Asked before an upload,
        it tries to make the reserve again once a second, not every `RETRY_SECONDS`: uploads wait no longer than
        that once deletes freed room."""
        if self.present():
            return False
        self.ensure(GIVEN_UP_RETRY_SECONDS)
        return not self.present()

    def release(self) -> bool:
        """Give the reserve up for the database; False if there was none to give."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        self._checked = time.monotonic()
        log.warning(
            "the disk is full: gave up the database's %d MiB space reserve so deletes can go on; it comes "
            "back once there is room",
            self.size // (1024 * 1024),
        )
        return True


def reserve_for(url: str) -> SpaceReserve | None:
    """The reserve of a SQLite database file; a database server keeps its own disk."""
    path = sqlite_file(url)
    return None if path is None else SpaceReserve(path + ".reserve")
