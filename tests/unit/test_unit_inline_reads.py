"""A HEAD's blob look-up runs on the event loop's thread when SQLite can answer without waiting, else in the
readers' pool as before (`store.inline`)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from docker_registry.core.digest import Digest
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.inline import InlineReads
from docker_registry.server.store.metadata import MetadataStore

LINKED = Digest("sha256", "1" * 64)
MISSING = Digest("sha256", "2" * 64)


def _threads_of(engine: sa.Engine) -> list[int]:
    """The thread of every statement `engine` runs from now on."""
    seen: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(*_args: Any) -> None:
        seen.append(threading.get_ident())

    return seen


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    store.link_blob("repo", LINKED, 7)
    store.close()
    return url


@pytest.fixture
def stores(database: str) -> Iterator[tuple[AsyncMetadataStore, list[int], list[int]]]:
    """The loop's store with inline reads, and the threads its pool's and its inline connection's statements ran in."""
    pool_engine, reads = create_engine(database), InlineReads(database)
    pooled, inline = _threads_of(pool_engine), _threads_of(reads.engine)
    store = AsyncMetadataStore(MetadataStore(pool_engine), inline=reads)
    yield store, pooled, inline
    store.close()


async def test_a_blob_look_up_runs_on_the_loop_thread(stores: tuple[AsyncMetadataStore, list[int], list[int]]) -> None:
    store, pooled, inline = stores
    assert await store.blob_or_manifest("repo", LINKED) == (7, None, False)
    assert await store.blob_or_manifest("repo", MISSING) == (None, None, False)
    assert await store.blob_or_manifest("other", LINKED) == (None, None, False)
    assert inline, "the look-ups ran on the inline connection"
    assert set(inline) == {threading.get_ident()}, "on the event loop's own thread"
    assert pooled == [], "no look-up went to the readers' pool"


async def test_a_database_that_would_make_it_wait_sends_it_to_the_readers(
    database: str, stores: tuple[AsyncMetadataStore, list[int], list[int]]
) -> None:
    """Another connection holds the database exclusively: the inline read gives up at once instead of blocking
    the loop for the busy timeout, the pool's read waits for the lock and answers; once the lock is gone the next
    look-up runs inline again, on a new connection."""
    store, pooled, inline = stores
    holder = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("PRAGMA user_version=1")
    holder.execute("COMMIT")  # the exclusive lock stays with this connection until it closes
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, holder.close)
    started = time.monotonic()
    look_up = asyncio.ensure_future(store.blob_or_manifest("repo", LINKED))
    await asyncio.sleep(0)
    assert time.monotonic() - started < 0.2, "the loop was not blocked while the database was locked"
    assert await look_up == (7, None, False)
    assert pooled, "the readers' pool answered"
    assert threading.get_ident() not in pooled
    inline.clear()
    assert await store.blob_or_manifest("repo", LINKED) == (7, None, False)
    assert set(inline) == {threading.get_ident()}


def test_another_thread_is_sent_to_the_readers(database: str) -> None:
    reads = InlineReads(database)
    query = "SELECT count(*) FROM repository_blobs"
    assert reads.run(lambda conn: conn.exec_driver_sql(query).scalar()) == 1
    answers: list[object] = []
    other = threading.Thread(target=lambda: answers.append(reads.run(lambda c: c.exec_driver_sql(query).scalar())))
    other.start()
    other.join()
    assert answers == [None], "the connection belongs to the thread that opened it"
    reads.close()
