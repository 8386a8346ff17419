"""Group commit's batches (`StoreBase.run_batch`) on SQLite and PostgreSQL, called directly: writes that all
succeed share one transaction without a savepoint each; a write that refuses after doing part of its work rolls back
alone, with its own error, and the others' changes are committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.tables import tags, uploads


class Refusal(Exception):
    pass


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_cluster").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    yield store
    store.close()


@pytest.fixture
def statements(store: MetadataStore) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(store.engine, "before_cursor_execute", record)


def refusing_after_a_write(store: MetadataStore) -> None:
    """A write that refuses after a statement of its own (as a manifest PUT refusing a missing blob would)."""

    def work(conn: sa.Connection) -> None:
        conn.execute(uploads.insert().values(id="half-done", repository="repo", size=0, created_at=0, updated_at=0))
        raise Refusal("refused after writing")

    store._write(work)


def test_a_batch_that_succeeds_runs_no_savepoints(store: MetadataStore, statements: list[str]) -> None:
    writes = [lambda i=i: store.create_upload(f"u{i}", "repo") for i in range(5)]  # type: ignore[misc]
    outcomes = store.run_batch(writes, durable=True)
    ran = list(statements)
    assert [error for _, error in outcomes] == [None] * 5
    assert all(store.upload(f"u{i}") is not None for i in range(5))
    assert not [s for s in ran if "SAVEPOINT" in s.upper()]
    if store.engine.dialect.name == "sqlite":  # PostgreSQL's driver begins without a statement
        assert sum(s.upper().startswith("BEGIN") for s in ran) == 1, "one transaction for the batch"


def test_a_refusal_in_a_batch_rolls_back_alone(store: MetadataStore) -> None:
    writes = [
        lambda: store.create_upload("before", "repo"),
        lambda: refusing_after_a_write(store),
        lambda: store.create_upload("after", "repo"),
    ]
    outcomes = store.run_batch(writes, durable=True)
    assert outcomes[0] == (None, None)
    assert outcomes[2] == (None, None)
    assert isinstance(outcomes[1][1], Refusal)
    assert store.upload("before") is not None
    assert store.upload("after") is not None
    assert store.upload("half-done") is None, "the refused write's own change is rolled back"


def test_a_refusal_alone_rolls_back_its_transaction(store: MetadataStore) -> None:
    [(result, error)] = store.run_batch([lambda: refusing_after_a_write(store)], durable=True)
    assert result is None
    assert isinstance(error, Refusal)
    assert store.upload("half-done") is None


def test_a_database_error_fails_the_whole_batch(store: MetadataStore) -> None:
    def broken() -> None:
        store._write(lambda conn: conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)"))

    writes = [lambda: store.create_upload("before", "repo"), broken]
    with pytest.raises(sa.exc.DBAPIError):
        store.run_batch(writes, durable=True)
    assert store.upload("before") is None


def test_a_broken_constraint_fails_its_write_alone(store: MetadataStore) -> None:
    """A constraint one write breaks (a tag pointing at a manifest another transaction removed meanwhile) is that
    write's failure, not the database's: the other clients' writes in its batch commit (a probe on PostgreSQL saw
    unrelated uploads and pushes answered 500 with the tag's foreign key violation)."""

    def dangling_tag(conn: sa.Connection) -> None:
        conn.execute(uploads.insert().values(id="half-done", repository="repo", size=0, created_at=0, updated_at=0))
        conn.execute(tags.insert().values(repository_id=987654, name="x", manifest_id=987654, updated_at=0))

    writes = [
        lambda: store.create_upload("before", "repo"),
        lambda: store._write(dangling_tag),
        lambda: store.create_upload("after", "repo"),
    ]
    outcomes = store.run_batch(writes, durable=True)
    assert outcomes[0] == (None, None)
    assert outcomes[2] == (None, None)
    assert isinstance(outcomes[1][1], sa.exc.IntegrityError)
    assert store.upload("before") is not None
    assert store.upload("after") is not None
    assert store.upload("half-done") is None, "the failed write's own change is rolled back"
