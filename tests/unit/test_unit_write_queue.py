"""The writer thread of group commit (`batching.WriteQueue`) on SQLite with its cross-process gate: it takes the
gate before it gathers its batch, so the writes that arrive while another process holds the database join the
batch that is waiting, and share its transaction."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.server.store import migrate
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
