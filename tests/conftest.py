"""Fixtures shared by the server's tests: real registry processes on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from postgres_cluster import PostgresCluster

from prerequisites import missing
from proxy_upstreams import distribution
from registry_process import RegistryProcess


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One registry for the session, deletes enabled, two workers; tests use their own repository names."""
    server = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """CNCF Distribution on loopback, anonymous: the upstream the pull-through cache tests mirror, one per module."""
    if not os.path.exists("/usr/bin/docker-registry"):
        missing("CNCF Distribution is not installed: apt-get install docker-registry")
    process = distribution(tmp_path_factory.mktemp("upstream"))
    yield process
    process.stop()


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., RegistryProcess]]:
    """Factory for a registry with its own config (e.g. deletes disabled, read-only); stopped after the test."""
    started: list[RegistryProcess] = []

    def make(**kwargs: object) -> RegistryProcess:
        server = RegistryProcess(tmp_path / f"registry{len(started)}", **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def client(registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=30, verify=False) as c:  # plain HTTP: skip loading CAs
        yield c


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One private PostgreSQL server for the session (`new_database()` gives each registry its own database)."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A database of the session's PostgreSQL server, shared by the tests that ask for it."""
    return postgres_cluster.new_database()
