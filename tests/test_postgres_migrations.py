"""Migrations that rewrite existing rows, run on a real PostgreSQL server against rows written at the revision
before: SQLite and PostgreSQL spell the SQL differently (`char` against `chr`), and a fresh database has no rows to
show the difference."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from notification_receiver import Receiver
from postgres_cluster import PostgresCluster

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="CNCF Distribution keeps no SQL metadata")


def _event(number: int) -> str:
    """An event as the registry stored it before 0021: Distribution's JSON, one line."""
    return json.dumps(
        {
            "id": f"old-{number}",
            "timestamp": "2026-12-01T10:00:00.000000000Z",
            "action": "pull",
            "target": {"repository": "before/upgrade", "tag": f"t{number}", "mediaType": "text/plain"},
            "request": {"id": f"r{number}", "method": "GET", "useragent": "test\nagent"},
            "actor": {},
            "source": {"addr": "old:5000"},
        },
        separators=(",", ":"),
    )


def test_event_counts_of_rows_written_before_0021_are_backfilled_and_delivered(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """0021 adds `events.count` (events in a row: a worker's batch of pull events was one row of JSON lines) and
    fills it for rows already waiting; the queue depth counts with it. Rows of 1, 3 and 2 events at 0019 (an
    escaped newline inside a field is no line break) get 1, 3 and 2, and every event is then delivered once, in
    order, by a registry on the upgraded database."""
    url = postgres_cluster.new_database()
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, "0019")
        rows = [[_event(1)], [_event(2), _event(3), _event(4)], [_event(5), _event(6)]]
        with engine.begin() as conn:
            for row in rows:
                conn.execute(
                    sa.text("INSERT INTO events (created_at, payload) VALUES (:at, :payload)"),
                    {"at": time.time(), "payload": "\n".join(row)},
                )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            counts = conn.execute(sa.text("SELECT count FROM events ORDER BY id")).scalars().all()
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == migrate.head()
    finally:
        engine.dispose()
    assert counts == [1, 3, 2]

    receiver = Receiver().start()
    endpoint = receiver.endpoint("upgraded", batch=10)
    config = {"database": {"url": url}, "notifications": {"endpoints": [endpoint]}}
    registry = RegistryProcess(tmp_path / "registry", workers=1, extra_config=config).start()
    try:
        events = receiver.wait_for(lambda got: len(got) >= 6)
        assert [e["id"] for e in events] == [f"old-{n}" for n in range(1, 7)]
        assert events[1]["request"]["useragent"] == "test\nagent"
    finally:
        registry.stop()
        receiver.stop()
