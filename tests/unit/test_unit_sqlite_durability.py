"""SQLite commits reach the disk before the client hears 201: a power loss must not undo an acknowledged push."""

from __future__ import annotations

from pathlib import Path

from docker_registry.server.store.engine import create_engine

FULL = 2


def test_every_connection_syncs_each_commit(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # NORMAL would sync the WAL only at checkpoints: the last commits could vanish with the power
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    finally:
        engine.dispose()
