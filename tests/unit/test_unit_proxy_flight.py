"""The lock file of a pull-through fetch (`proxy.flight`): one fetch's from start to end, since its readers take
the fetch's outcome from it (whether the last byte may be sent). Real files and locks; the interleaving of two
workers is forced at the one point where it matters."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from docker_registry.core.digest import parse_digest
from docker_registry.server.proxy import flight


def _fetch_that_stored(lock_path: Path, data_path: Path) -> int:
    """A fetch holding its lock that announced a 5-byte blob, wrote it and stored it."""
    fd = flight._try_lock(str(lock_path))
    assert fd is not None
    data_path.write_bytes(b"abcde")
    os.pwrite(fd, b"5\n", 0)
    os.pwrite(fd, flight.STORED, 2)
    return fd


def test_a_lock_file_unlinked_by_its_ending_fetch_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that opened the lock file just before the fetch ended (unlinked it, then let it go) must not lock
    that file: its readers would see it held again and take the new holder's outcome for their own fetch's."""
    lock_path, data_path = tmp_path / "flights" / "x", tmp_path / "spool" / "x"
    data_path.parent.mkdir()
    fetcher = _fetch_that_stored(lock_path, data_path)
    joined = flight._join(flight._Flight(None, str(lock_path), str(data_path)))
    assert joined is not None
    reader_lock, size, data = joined
    assert size == 5

    real_open = os.open
    opened: list[str] = []

    def open_then_fetch_ends(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        opened.append(path)
        if len(opened) == 1:  # the fetch's end falls between this worker's open and its lock
            os.unlink(lock_path)
            os.close(fetcher)
        return fd

    monkeypatch.setattr(flight.os, "open", open_then_fetch_ends)
    taken = flight._try_lock(str(lock_path))
    monkeypatch.undo()
    try:
        assert taken is not None
        assert os.fstat(taken).st_nlink == 1
        assert os.fstat(taken).st_ino == os.stat(lock_path).st_ino  # a new file, at the path
        assert not flight._held(reader_lock)  # the reader's fetch ended, and stored its blob
        assert flight._stored(reader_lock)
    finally:
        os.close(reader_lock)
        data.close()
        if taken is not None:
            os.close(taken)


def test_a_crashed_fetchers_lock_file_is_replaced_not_reused(tmp_path: Path) -> None:
    """A fetcher killed mid-blob leaves its lock file (unlocked, its size in it) and its data: the next fetch makes
    a new lock file, so no reader can pair that stale size and data with the new fetch's outcome."""
    lock_path, data_path = tmp_path / "flights" / "x", tmp_path / "spool" / "x"
    lock_path.parent.mkdir()
    data_path.parent.mkdir()
    lock_path.write_bytes(b"5\n")  # what the dead fetcher announced
    data_path.write_bytes(b"abcd")  # and the bytes it had
    stale = os.open(lock_path, os.O_RDONLY)  # a reader's look at it
    try:
        assert flight._join(flight._Flight(None, str(lock_path), str(data_path))) is None  # nobody holds it
        taken = flight._try_lock(str(lock_path))
        assert taken is not None
        try:
            assert os.fstat(taken).st_ino != os.fstat(stale).st_ino
            assert os.fstat(taken).st_size == 0  # no size announced by this fetch yet
            assert not flight._held(stale)
            assert flight._join(flight._Flight(None, str(lock_path), str(data_path))) is None
        finally:
            os.close(taken)
    finally:
        os.close(stale)


async def test_a_failed_fetch_is_remembered_without_its_frames_and_not_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failure its followers are told of was kept with its traceback, whose frames held the bytes the fetch had
    received: a probe's 70 failed fetches of 8 MiB blobs kept 430 MB in two workers, for good."""
    flights = flight.Flights(None, "")  # type: ignore[arg-type]  # what `_finished` touches needs no registry
    received = bytearray(8 * 1024 * 1024)

    async def failing(data: bytearray) -> None:
        try:
            raise KeyError(len(data))
        except KeyError:
            raise OSError("the upstream broke off") from None

    task = asyncio.ensure_future(failing(received))
    await asyncio.wait({task})
    clock = [1000.0]
    monkeypatch.setattr(flight.time, "monotonic", lambda: clock[0])
    old = parse_digest("sha256:" + "1" * 64)
    flights._finished(old, task)
    failure, _ = flights._failures[old]
    assert failure.__traceback__ is None, "no frame, and so no bytes, kept"
    assert failure.__context__ is None
    clock[0] += flight.FAILURE_MEMORY_SECONDS + 1
    later = asyncio.ensure_future(failing(received))
    await asyncio.wait({later})
    new = parse_digest("sha256:" + "2" * 64)
    flights._finished(new, later)
    assert list(flights._failures) == [new], "a failure no request can still ask about is forgotten"
