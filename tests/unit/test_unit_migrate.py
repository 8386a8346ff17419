"""Migrations: a database at the newest revision is recognised without Alembic (a command's start-up), and
anything else still goes through it."""

from __future__ import annotations

import json
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
