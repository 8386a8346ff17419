"""The database's space reserve on a full disk, where two workers meet: one failing to make it again while the
other gives it up (the real full disk is `tests/test_server_full_disk.py`; this race is a matter of microseconds)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from docker_registry.server.store.reserve import SpaceReserve


def test_a_reserve_given_up_while_it_could_not_be_made_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ensure` runs after a commit: an error from it would fail a write that is done (a 500 for a pushed
    manifest). Here the disk has no room for the reserve, and another worker's `release` unlinks the file this one
    has just created before this one removes it."""
    reserve = SpaceReserve(str(tmp_path / "registry.db.reserve"))
    other_worker = SpaceReserve(reserve.path)

    def full_disk(fd: int, offset: int, size: int) -> None:
        assert other_worker.release()  # what the other worker's commit that found the disk full did meanwhile
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    reserve.ensure()
    assert not os.path.exists(reserve.path)

    monkeypatch.undo()
    reserve.ensure(retry_after=0.0)  # the next try finds room
    assert os.path.getsize(reserve.path) == reserve.size
