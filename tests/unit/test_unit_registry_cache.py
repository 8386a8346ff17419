"""Per-process caches are dropped as soon as another connection commits to the metadata database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from docker_registry.core.digest import Digest
from docker_registry.server.registry.cache import ManifestCache, RegistryCache
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import ChangeWatcher, create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import StoredManifest


def test_commit_elsewhere_empties_the_caches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    watcher = ChangeWatcher(url)
    cache = RegistryCache(watcher)
    generation = cache.refresh()
    cache.tags.put(("repo", "latest"), Digest("sha256", "0" * 64))
    assert cache.refresh() == generation
    assert cache.tags.get(("repo", "latest")) is not None, "nothing committed: the entry stays"
    store.link_blob("repo", Digest("sha256", "1" * 64), 1)
    assert cache.refresh() != generation, "a read begun before the commit must not be cached"
    assert cache.tags.get(("repo", "latest")) is None
    watcher.close()
    store.close()


def test_manifest_cache_is_bounded_in_bytes() -> None:
    cache = ManifestCache(max_bytes=10)
    a, b = Digest("sha256", "a" * 64), Digest("sha256", "b" * 64)
    cache.put(("r", a), StoredManifest("t", b"123456"))
    cache.put(("r", b), StoredManifest("t", b"123456"))
    assert cache.get(("r", a)) is None
    assert cache.get(("r", b)) is not None


def test_without_a_change_signal_nothing_outlives_a_request() -> None:
    watcher = ChangeWatcher("postgresql://localhost/registry")
    assert not watcher.reliable
    assert watcher.changed()


class _CountingWatcher:
    reliable = True

    def __init__(self) -> None:
        self.calls = 0

    def changed(self) -> bool:
        self.calls += 1
        return False


async def test_one_database_check_per_event_loop_iteration() -> None:
    watcher = _CountingWatcher()
    cache = RegistryCache(watcher)  # type: ignore[arg-type]
    cache.refresh()
    cache.refresh()
    assert watcher.calls == 1, "requests handled in the same iteration were all received before the first check"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    cache.refresh()
    assert watcher.calls == 2
