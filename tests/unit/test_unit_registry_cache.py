"""Per-process caches are dropped as soon as another connection commits to the metadata database."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from docker_registry.core.digest import Digest
from docker_registry.drivers.file import Driver
from docker_registry.server.registry.cache import ManifestCache, RegistryCache
from docker_registry.server.registry.errors import BLOB_UNKNOWN, RegistryError
from docker_registry.server.registry.service import Registry
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import ChangeWatcher, create_engine, with_driver
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import StoredManifest


def test_commit_elsewhere_empties_the_caches(watched: tuple[MetadataStore, RegistryCache]) -> None:
    store, cache = watched
    generation = cache.refresh()
    cache.tags.put(("repo", "latest"), Digest("sha256", "0" * 64))
    assert cache.refresh() == generation
    assert cache.tags.get(("repo", "latest")) is not None, "nothing committed: the entry stays"
    store.link_blob("repo", Digest("sha256", "1" * 64), 1)
    assert cache.refresh() != generation, "a read begun before the commit must not be cached"
    assert cache.tags.get(("repo", "latest")) is None


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


# --- the registry logic over the caches: values read before a commit are never kept ------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _index(label: str) -> tuple[bytes, str]:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"l": label}})
    return raw.encode(), "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


async def _next_iteration() -> None:
    """Let the event loop turn, so the caches look at the database again (one check per iteration)."""
    for _ in range(2):
        await asyncio.sleep(0)


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def watched(database: str) -> Iterator[tuple[MetadataStore, RegistryCache]]:
    """A store and, over the same database, a worker's caches with their change watcher."""
    store = MetadataStore(create_engine(database))
    watcher = ChangeWatcher(database)
    yield store, RegistryCache(watcher)
    watcher.close()
    store.close()


@pytest.fixture
def worker(database: str, tmp_path: Path) -> Iterator[Callable[[], tuple[Registry, AsyncMetadataStore]]]:
    """Makes what one worker process holds over the shared database: its own connections, change watcher and
    caches."""
    opened: list[tuple[AsyncMetadataStore, ChangeWatcher]] = []

    def make() -> tuple[Registry, AsyncMetadataStore]:
        store, watcher = AsyncMetadataStore(MetadataStore(create_engine(database))), ChangeWatcher(database)
        opened.append((store, watcher))
        return Registry(store, Driver({"rootdirectory": str(tmp_path / "data")}), RegistryCache(watcher)), store

    yield make
    for store, watcher in opened:
        watcher.close()
        store.close()


async def test_a_tag_read_before_it_moved_is_not_cached_after(worker) -> None:  # type: ignore[no-untyped-def]
    """One request loads the tag from the database; before its answer is back, another request moves the tag and a
    third reads the new target. The first request may answer what it read, but must not cache it: the next pull
    would get the old target until some later commit."""
    registry, store = worker()
    (old, old_digest), (new, new_digest) = _index("old"), _index("new")
    await registry.put_manifest("repo", "latest", old, OCI_INDEX)

    read_done, moved = asyncio.Event(), asyncio.Event()
    load = store.tag_digest

    async def slow_load(repository: str, tag: str) -> str | None:
        value = await load(repository, tag)  # the old target, read before the move...
        read_done.set()
        await moved.wait()  # ...and returned only after it
        return value

    store.tag_digest = slow_load  # type: ignore[method-assign]
    slow = asyncio.ensure_future(registry.resolve("repo", "latest"))
    await read_done.wait()
    store.tag_digest = load  # type: ignore[method-assign]
    await registry.put_manifest("repo", "latest", new, OCI_INDEX)
    await _next_iteration()
    assert str(await registry.resolve("repo", "latest")) == new_digest
    moved.set()
    assert str(await slow) == old_digest
    await _next_iteration()
    assert str(await registry.resolve("repo", "latest")) == new_digest, "a value read before the commit was cached"
    _, manifest = await registry.get_manifest("repo", "latest")
    assert manifest.content == new


async def test_a_tag_moved_by_another_worker_is_seen_at_once(worker) -> None:  # type: ignore[no-untyped-def]
    """Two workers on one SQLite database: each caches the tag, one moves it, the other's next read sees it."""
    (first, first_digest), (second, second_digest) = _index("first"), _index("second")
    (worker_a, _), (worker_b, _) = worker(), worker()
    await worker_a.put_manifest("repo", "latest", first, OCI_INDEX)
    for target, digest in [(second, second_digest), (first, first_digest), (second, second_digest)]:
        await _next_iteration()
        for each in (worker_a, worker_b):  # both have the current target cached now
            await each.resolve("repo", "latest")
            await each.get_manifest("repo", "latest")
        await worker_a.put_manifest("repo", "latest", target, OCI_INDEX)
        await _next_iteration()
        assert str(await worker_b.resolve("repo", "latest")) == digest
        assert (await worker_b.get_manifest("repo", "latest"))[1].content == target


async def test_a_blob_size_read_before_its_delete_is_not_cached_after(worker) -> None:  # type: ignore[no-untyped-def]
    """The same for the blob cache: a size read before the blob was deleted must not make it servable after."""
    registry, store = worker()
    digest = "sha256:" + hashlib.sha256(b"blob").hexdigest()
    await store.link_blob("repo", digest, 4)
    read_done, deleted = asyncio.Event(), asyncio.Event()
    load = store.blob_or_manifest

    async def slow_load(repository: str, blob: Digest) -> tuple[int | None, object]:
        value = await load(repository, blob)
        read_done.set()
        await deleted.wait()
        return value

    store.blob_or_manifest = slow_load  # type: ignore[method-assign]
    slow = asyncio.ensure_future(registry.blob("repo", digest))
    await read_done.wait()
    store.blob_or_manifest = load  # type: ignore[method-assign]
    await registry.delete_blob("repo", digest)
    await _next_iteration()
    with pytest.raises(RegistryError):
        await registry.blob("repo", digest)
    deleted.set()
    assert (await slow).size == 4
    await _next_iteration()
    with pytest.raises(RegistryError) as info:
        await registry.blob("repo", digest)
    assert info.value.error is BLOB_UNKNOWN, "a size read before the delete was cached"


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    """`postgresql://` would be psycopg2 for SQLAlchemy, which the `postgres` extra does not install."""
    assert with_driver("postgresql://u:p%40w@db:5432/registry?sslmode=require") == (
        "postgresql+psycopg://u:p%40w@db:5432/registry?sslmode=require"
    )
    assert with_driver("postgres://db/registry") == "postgresql+psycopg://db/registry"
    assert with_driver("postgresql+psycopg://db/registry") == "postgresql+psycopg://db/registry"
    assert with_driver("sqlite:////data/registry.db") == "sqlite:////data/registry.db"


def test_upload_session_writes_leave_the_caches(watched: tuple[MetadataStore, RegistryCache]) -> None:
    """A session's bookkeeping (create, claim, release, claim and pin, delete) changes nothing the caches hold, so
    the HEADs of the blobs other clients are pushing keep their cached answers; the commit that links a blob
    empties them."""
    store, cache = watched
    digest = Digest("sha256", "2" * 64)
    generation = cache.refresh()
    cache.missing.put(("repo", digest), True)
    store.create_upload("u1", "repo")
    assert store.claim_upload("u1", "repo", 0, "t1", None) is not None
    assert store.release_upload("u1", "t1", 5)
    claimed, pinned = store.claim_upload_pinned("u1", "repo", 5, "t2", None, digest)
    assert claimed is not None
    assert pinned
    store.create_upload("u2", "repo")
    assert store.delete_upload("u2") is not None
    assert cache.refresh() == generation
    assert cache.missing.get(("repo", digest)), "no session write may drop the answers of the caches"
    assert store.finish_upload("u1", "repo", digest, 5, "t2")
    assert cache.refresh() != generation, "the link is a change the caches must see"
    assert cache.missing.get(("repo", digest)) is None
