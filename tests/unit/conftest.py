"""Fixtures shared by the unit tests of the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from docker_registry.drivers.file import Driver
from docker_registry.server.registry.uploads import Uploads
from docker_registry.server.store import migrate
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MetadataStore, CollectionQueries]]:
    """A migrated SQLite store and the collector's queries on the same database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    yield store, collection
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new empty database on SQLite, then on PostgreSQL (a test using it runs once on each)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_cluster").new_database()
        return url
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def file_uploads(database_url: str, tmp_path: Path) -> Iterator[tuple[Uploads, MetadataStore, Driver]]:
    """Upload sessions on the filesystem driver, over a new database on SQLite, then on PostgreSQL."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, driver = MetadataStore(engine), Driver({"rootdirectory": str(tmp_path / "data")})
    yield Uploads(AsyncMetadataStore(store), driver), store, driver
    store.close()
