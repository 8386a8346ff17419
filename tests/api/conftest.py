"""The API tests run against SQLite by default; `REGISTRY_TEST_DATABASE=postgres` runs the same tests with each
registry on its own database of a private PostgreSQL server (one server for the session, see `postgres_cluster`)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import PostgresCluster

from registry_process import RegistryProcess, implementation

DATABASE = os.environ.get("REGISTRY_TEST_DATABASE", "sqlite")
if DATABASE not in ("sqlite", "postgres"):
    raise pytest.UsageError(f"REGISTRY_TEST_DATABASE={DATABASE}: expected sqlite or postgres")


@pytest.fixture(scope="session")
def database_config(request: pytest.FixtureRequest) -> Callable[[], dict[str, Any]]:
    """The `database` section for a new registry: none (SQLite in its data directory), or a fresh PostgreSQL
    database."""
    if DATABASE != "postgres" or implementation() != "ours":
        return dict
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return lambda: {"database": {"url": cluster.new_database()}}


def _with_database(kwargs: dict[str, Any], database: dict[str, Any]) -> dict[str, Any]:
    extra = copy.deepcopy(kwargs.get("extra_config") or {})
    for key, value in database.items():
        extra.setdefault(key, value)  # a test that sets its own `database` keeps it
    return {**kwargs, "extra_config": extra}


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, database_config: Callable[[], dict[str, Any]]
) -> Iterator[RegistryProcess]:
    server = RegistryProcess(tmp_path_factory.mktemp("registry"), extra_config=database_config()).start()
    yield server
    server.stop()


@pytest.fixture
def make_registry(
    tmp_path: Path, database_config: Callable[[], dict[str, Any]]
) -> Iterator[Callable[..., RegistryProcess]]:
    started: list[RegistryProcess] = []

    def make(**kwargs: Any) -> RegistryProcess:
        server = RegistryProcess(tmp_path / f"registry{len(started)}", **_with_database(kwargs, database_config()))
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()
