"""The writer thread's answers when the write gate's holder is stopped: a write not yet taken into a batch is
answered as timed out after twice the lock timeout and never run; one taken is answered by the thread with its
real outcome however long its batch takes (answering it as timed out while it went on to commit made a client
retry a push that had succeeded). The real flock held by another process is `tests/test_server_database_faults.py`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import exc as db_errors

from docker_registry.server.store.batching import STALL_MARGIN, Followup, WriteQueue

LOCK_TIMEOUT = 0.2
STALL = 2 * LOCK_TIMEOUT + STALL_MARGIN


class Gate:
    """A write gate another process holds until `open` is set."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.open.wait()
        yield


class Store:
    lock_timeout = LOCK_TIMEOUT

    def __init__(self) -> None:
        self.gate = Gate()
        self.committed: list[str] = []

    def run_batch(self, runs: list[Callable[[], Any]], **_: Any) -> list[tuple[Any, BaseException | None]]:
        return [(run(), None) for run in runs]

    def release_thread_connection(self) -> None:
        pass


async def test_a_write_taken_into_a_batch_gets_its_outcome_however_long_it_takes() -> None:
    store = Store()
    writes = WriteQueue(store)  # type: ignore[arg-type]

    def then(_claimed: str) -> Followup[str]:
        time.sleep(STALL + 0.3)  # a slow step between commits: publishing a large upload on a slow disk
        store.committed.append("placed")
        return Followup(lambda: store.committed.append("linked") or "linked")

    try:
        answer = await writes.submit(lambda: store.committed.append("claim") or "claimed", True, then)
        assert answer == "linked"
        assert store.committed == ["claim", "placed", "linked"]
    finally:
        writes.close()


async def test_a_write_the_gate_keeps_waiting_is_refused_and_never_run() -> None:
    store = Store()
    store.gate.open.clear()
    writes = WriteQueue(store)  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        with pytest.raises(db_errors.TimeoutError):
            await writes.submit(lambda: store.committed.append("late"), True)
        assert STALL - 0.1 < time.monotonic() - started < STALL + 1.0
        store.gate.open.set()
        assert await writes.submit(lambda: store.committed.append("next") or "done", True) == "done"
        await asyncio.sleep(0.1)
        assert store.committed == ["next"]  # the refused write never ran
    finally:
        writes.close()
