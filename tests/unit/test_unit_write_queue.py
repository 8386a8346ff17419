"""The writer thread of group commit (`batching.WriteQueue`) on SQLite with its cross-process gate: it takes the
gate before it gathers its batch, so the writes that arrive while another process holds the database join the
batch that is waiting, and share its transaction."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.server.store import migrate
from docker_registry.server.store.batching import Followup, WriteQueue
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.writegate import gate_for


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    store = MetadataStore(engine, gate=gate_for(url))
    yield store
    store.close()


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


async def test_writes_arriving_while_the_gate_is_held_elsewhere_join_the_waiting_batch(store: MetadataStore) -> None:
    assert store.gate is not None
    begins: list[str] = []
    sa.event.listen(
        store.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: begins.append(statement) if statement.startswith("BEGIN") else None,
    )
    writes = WriteQueue(store)
    held = os.open(store.gate.path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # another worker's writer holds the database
        first = writes.submit(lambda: store.create_upload("u0", "repo"), durable=False)
        _wait_until(writes._queue.empty)  # the writer took it and waits for the gate
        await asyncio.sleep(0.05)
        later = [writes.submit(lambda i=i: store.create_upload(f"u{i}", "repo"), durable=True) for i in range(1, 5)]
        fcntl.flock(held, fcntl.LOCK_UN)
        await asyncio.wait_for(asyncio.gather(first, *later), 10)
    finally:
        os.close(held)
        writes.close()
    assert len(begins) == 1, "the five writes in one transaction"
    assert all(store.upload(f"u{i}") is not None for i in range(5))


async def test_a_writes_next_step_runs_after_its_commit_with_the_gate_given_back(store: MetadataStore) -> None:
    """`then` (a claim's blob publication) sees the write committed and the gate free, and answers for the write;
    what it raises is the write's error, the write staying committed."""
    assert store.gate is not None
    seen: list[tuple[bool, bool]] = []

    def then(result: Any) -> str:
        gate = os.open(store.gate.path, os.O_RDWR)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the writer still held the gate
            fcntl.flock(gate, fcntl.LOCK_UN)
        finally:
            os.close(gate)
        seen.append((result is None, store.upload("u1") is not None))
        return "followed"

    def failing(result: Any) -> None:
        raise OSError("the move failed")

    writes = WriteQueue(store)
    try:
        assert await writes.submit(lambda: store.create_upload("u1", "repo"), durable=False, then=then) == "followed"
        with pytest.raises(OSError, match="the move failed"):
            await writes.submit(lambda: store.create_upload("u2", "repo"), durable=False, then=failing)
    finally:
        writes.close()
    assert seen == [(True, True)], "run once, on the write's result, after its commit"
    assert store.upload("u2") is not None, "a failing next step leaves the committed write as it is"


async def test_writes_without_a_next_step_are_answered_before_the_others_steps_run(store: MetadataStore) -> None:
    assert store.gate is not None
    writes = WriteQueue(store)
    step_may_end = threading.Event()
    held = os.open(store.gate.path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # both writes wait for the gate, so they share a batch
        slow = writes.submit(
            lambda: store.create_upload("slow", "repo"), durable=False, then=lambda _: step_may_end.wait(10)
        )
        _wait_until(writes._queue.empty)
        plain = writes.submit(lambda: store.create_upload("plain", "repo"), durable=True)
        fcntl.flock(held, fcntl.LOCK_UN)
        await asyncio.wait_for(plain, 5)  # answered while the other write's step still runs
        assert not slow.done()
        step_may_end.set()
        assert await asyncio.wait_for(slow, 5) is True
    finally:
        step_may_end.set()
        os.close(held)
        writes.close()


async def test_a_next_step_may_answer_with_a_write_run_in_the_next_batch(store: MetadataStore) -> None:
    """A step that answers `Followup` (a published blob's link) is answered by that write, run in a transaction of
    its own after the step, ahead of the writes still queued; a follow-up that refuses is its write's error."""
    begins: list[str] = []
    sa.event.listen(
        store.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: begins.append(statement) if statement.startswith("BEGIN IMM") else None,
    )
    order: list[str] = []

    def link() -> str:
        order.append("follow-up")
        store.create_upload("linked", "repo")
        return "linked"

    def step(result: Any) -> Followup:
        order.append(f"step, committed: {store.upload('claimed') is not None}")
        return Followup(link)

    def refusing() -> None:
        raise ValueError("the session is gone")

    writes = WriteQueue(store)
    try:
        answer = await writes.submit(lambda: store.create_upload("claimed", "repo"), durable=False, then=step)
        assert answer == "linked"
        assert order == ["step, committed: True", "follow-up"]
        assert len(begins) == 2, "the follow-up in a write transaction after the first one's commit"
        with pytest.raises(ValueError, match="the session is gone"):
            await writes.submit(lambda: None, durable=False, then=lambda _: Followup(refusing))
    finally:
        writes.close()
    assert store.upload("linked") is not None


async def test_a_follow_up_still_pending_when_the_queue_closes_is_run_and_answered(store: MetadataStore) -> None:
    def second() -> str:
        store.create_upload("second", "repo")
        return "done"

    writes = WriteQueue(store)
    loop = asyncio.get_running_loop()
    answer = writes.submit(lambda: store.create_upload("first", "repo"), durable=False, then=lambda _: Followup(second))
    writes._queue.put(None)  # closing right behind it: the follow-up is queued after the stop
    await loop.run_in_executor(None, writes._thread.join, 10)
    assert await asyncio.wait_for(answer, 5) == "done"
    assert store.upload("second") is not None


async def test_follow_ups_of_one_batch_each_answer_their_own_write(store: MetadataStore) -> None:
    assert store.gate is not None
    writes = WriteQueue(store)
    held = os.open(store.gate.path, os.O_RDWR | os.O_CREAT)

    def follow(i: int) -> Followup[str]:
        def link() -> str:
            store.create_upload(f"linked{i}", "repo")
            return f"linked {i}"

        return Followup(link)

    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # all of them wait for the gate, so they share a batch
        first = writes.submit(lambda: store.create_upload("claim0", "repo"), durable=False, then=lambda _: follow(0))
        _wait_until(writes._queue.empty)
        rest = [
            writes.submit(
                lambda i=i: store.create_upload(f"claim{i}", "repo"), durable=False, then=lambda _, i=i: follow(i)
            )
            for i in range(1, 4)
        ]
        fcntl.flock(held, fcntl.LOCK_UN)
        answers = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    finally:
        os.close(held)
        writes.close()
    assert answers == [f"linked {i}" for i in range(4)]
    assert all(store.upload(f"linked{i}") is not None for i in range(4))
