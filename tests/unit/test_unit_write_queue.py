"""The writer thread of group commit (`batching.WriteQueue`) on SQLite with its cross-process gate: it takes the
gate before it gathers its batch, so the writes that arrive while another process holds the database join the
batch that is waiting, and share its transaction."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.server.store import batching, migrate
from docker_registry.server.store.batching import WriteQueue
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


async def test_answers_are_on_the_loops_ready_queue_before_the_gate_is_given_back(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer appends each batch's outcomes to the loop's ready queue while it still holds the GIL and the gate
    (no system call, so no wait for the GIL there), and writes the loop's wake-up byte only after the gate: a busy
    loop needs no wake-up and an idle one gets it as before."""
    assert store.gate is not None
    loop = asyncio.get_running_loop()
    queued_at_release: list[bool] = []
    held = store.gate.held

    @contextlib.contextmanager
    def observed() -> Iterator[None]:
        with held():
            yield
            # the loop sleeps in epoll_wait (no wake-up written yet), so nothing takes the callback off its queue
            queued_at_release.append(any(h._callback is batching._settle_all for h in list(loop._ready)))  # type: ignore[attr-defined]

    monkeypatch.setattr(store.gate, "held", observed)
    writes = WriteQueue(store)
    safety = loop.call_later(3, lambda: None)  # the loop's only timer: without the wake-up it would sleep until then
    started = time.monotonic()
    try:
        await writes.submit(lambda: store.create_upload("u0", "repo"), durable=True)
    finally:
        safety.cancel()
        writes.close()
    assert queued_at_release == [True]
    assert time.monotonic() - started < 2, "the idle loop was woken after the gate"
    assert store.upload("u0") is not None


def test_a_loop_without_asyncio_internals_is_answered_after_the_gate() -> None:
    """A loop that is not asyncio's own gets the public `call_soon_threadsafe`, and only when woken, after the gate."""

    class Foreign:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
            self.calls.append((callback, args))

    foreign = Foreign()
    future: Any = object()
    write = batching._Write(lambda: None, True, 0.0, foreign, future)  # type: ignore[arg-type]
    wake_ups = batching._queue_answers([(write, "done", None)])
    assert foreign.calls == []
    for wake in wake_ups:
        wake()
    assert foreign.calls == [(batching._settle_all, ([(future, "done", None)],))]
