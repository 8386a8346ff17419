"""The PostgreSQL change signal that keeps each worker's caches coherent across nodes (`store/notify.py`), against a
real server: a commit on another connection is seen by the very next check, nothing else counts as a change, and
while the listening connection is gone the watcher says it cannot be trusted, until it is back by itself."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa
from postgres_cluster import PostgresCluster

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine, write_transaction
from docker_registry.server.store.notify import PostgresChangeWatcher


async def _until(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _commit(engine: sa.Engine) -> None:
    with write_transaction(engine) as conn:
        conn.execute(sa.text("SELECT 1"))


async def test_commits_elsewhere_are_seen_at_the_next_check_and_outages_turn_caches_off() -> None:
    cluster = PostgresCluster().start()
    url = cluster.new_database()
    engine = create_engine(url)
    migrate.upgrade(engine)
    watcher = PostgresChangeWatcher(url)
    try:
        assert not watcher.reliable, "nothing is trusted before LISTEN"
        await watcher.start()
        await _until(lambda: watcher.reliable)
        assert watcher.changed(), "what happened before listening counts as changed"
        assert not watcher.changed()
        for _ in range(20):
            await asyncio.to_thread(_commit, engine)
            assert watcher.changed(), "a commit acknowledged elsewhere must be seen by the next check"
            assert not watcher.changed()
        cluster.stop()
        engine.dispose()
        assert watcher.changed()
        await _until(lambda: not watcher.reliable)
        assert watcher.changed(), "while not listening every check says changed: caches live for one request"
        cluster.start()
        await _until(lambda: watcher.reliable)
        assert watcher.changed(), "commits missed while down count as a change"
        await asyncio.to_thread(_commit, engine)
        assert watcher.changed()
        assert not watcher.changed()
    finally:
        await watcher.aclose()
        engine.dispose()
        cluster.remove()
