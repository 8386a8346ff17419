"""Migrations: a database at the newest revision is recognised without Alembic (a command's start-up), and
anything else still goes through it."""

from __future__ import annotations

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


def test_no_plain_head_means_alembic_decides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "0001_a.py").write_text('revision = "a"\ndown_revision = None\n')
    (tmp_path / "0002_b.py").write_text('revision = "b"\ndown_revision = None\n')  # two heads
    monkeypatch.setattr(migrate, "VERSIONS", tmp_path)
    assert migrate._head_from_sources() is None
