"""Migrations: a database at the newest revision is recognised without Alembic (a command's start-up), and
anything else still goes through it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    assert migrate._head_from_sources() == migrate.head()


def test_a_new_database_is_migrated_and_a_current_one_left_alone(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == migrate.head()
        migrate.upgrade(engine)  # already current: nothing to do
    finally:
        engine.dispose()


def test_a_database_behind_the_head_is_upgraded(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        migrate.upgrade(engine, "0001")
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == migrate.head()
            assert sa.inspect(conn).has_table("leases")
    finally:
        engine.dispose()


_MIGRATE_AT = """
import sys, time
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
engine = create_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
migrate.upgrade(engine)
"""
"""A process that migrates the database at `sys.argv[1]` at the wall-clock time `sys.argv[2]`."""


def test_two_processes_migrating_one_sqlite_database_at_once_both_start(tmp_path: Path) -> None:
    """Two registry processes (or `serve` and a `garbage-collect`) starting together on a database behind the head:
    the deferred transaction's first DDL failed at once with "database is locked" in whichever came second, about
    two times in five (upgrade probe), and that process did not start. Here two processes, released at one instant
    once their imports are done, a few times over."""
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / f'registry-{attempt}.db'}"
        engine = create_engine(url)
        migrate.upgrade(engine, "0026")
        engine.dispose()
        at = str(time.time() + 1.5)
        started = [
            subprocess.Popen([sys.executable, "-c", _MIGRATE_AT, url, at], stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        errors = [process.communicate(timeout=60)[1] for process in started]
        assert [process.returncode for process in started] == [0, 0], f"attempt {attempt}: {errors}"
        with create_engine(url).connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == migrate.head()


def test_no_plain_head_means_alembic_decides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "0001_a.py").write_text('revision = "a"\ndown_revision = None\n')
    (tmp_path / "0002_b.py").write_text('revision = "b"\ndown_revision = None\n')  # two heads
    monkeypatch.setattr(migrate, "VERSIONS", tmp_path)
    assert migrate._head_from_sources() is None


def test_0025_forgets_the_chains_presented_before_and_their_images_nothing_names(database_url: str) -> None:
    """Chains presented before f6734f7's checks may name another repository's blob: forgotten, to be presented
    again; their images go unless an image pushed through v1 was built on them."""
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine, "0024")
        insert = sa.text(
            "INSERT INTO v1_images (id, json, parent, ancestry, layer_digest, size, checksum, diff_id, complete,"
            " created_at) VALUES (:id, :json, :parent, :ancestry, NULL, NULL, :checksum, NULL, :complete, 0)"
        )
        images = [
            {"id": "a" * 64, "parent": None, "ancestry": ["a" * 64], "checksum": None},  # presented, unnamed
            {"id": "b" * 64, "parent": None, "ancestry": ["b" * 64], "checksum": None},  # presented, built on
            {"id": "c" * 64, "parent": "b" * 64, "ancestry": ["c" * 64, "b" * 64], "checksum": "sha256:x"},  # pushed
        ]
        with engine.begin() as conn:
            for image in images:
                conn.execute(
                    insert, {**image, "json": b"{}", "ancestry": json.dumps(image["ancestry"]), "complete": True}
                )
            conn.execute(
                sa.text("INSERT INTO v1_presented VALUES ('sha256:' || :hex, :top)"), {"hex": "d" * 64, "top": "a" * 64}
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM v1_presented")).scalar() == 0
            left = sorted(conn.execute(sa.text("SELECT id FROM v1_images")).scalars())
        assert left == ["b" * 64, "c" * 64]
    finally:
        engine.dispose()
