"""A collection deletes unlinked blobs in batches, pipelined (two batches' files go at once, and a batch's rows once
its files are gone): every batch's files and rows end up deleted and counted, not only the last one's. Process
tests never have more than one batch (2,000 blobs), so the batch size is made small here."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from docker_registry.core.digest import Digest, blob_path
from docker_registry.drivers.file import Driver
from docker_registry.server.gc import collector
from docker_registry.server.store.collection import CollectionQueries, LeaseLost
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import COLLECTION_LEASE

BLOBS = 7


def _linked_blobs(store: MetadataStore, root: Path, count: int) -> list[Digest]:
    """`count` blobs, each linked into "repo" by a link no manifest names (an upload that never got its manifest)."""
    digests = []
    for n in range(count):
        content = f"linked blob {n}".encode()
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        file = root / blob_path(digest)
        file.parent.mkdir(parents=True)
        file.write_bytes(content)
        store.link_blob("repo", digest, len(content))
        digests.append(digest)
    return digests


@pytest.mark.parametrize("delay", [0, 60], ids=["single pass", "marked candidates"])
def test_every_batch_of_unlinked_blobs_is_deleted_files_and_rows(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float
) -> None:
    store, collection = stores
    root = tmp_path / "data"
    digests = _linked_blobs(store, root, BLOBS)
    for digest in digests:
        assert store.unlink_blob("repo", digest)
    if delay:  # made, and candidates, longer than the grace period ago
        with sqlite3.connect(tmp_path / "registry.db") as db:
            db.execute("UPDATE blobs SET created_at = created_at - ?", (2 * delay,))
        collection.mark_blobs(time.time() - 2 * delay)
    monkeypatch.setattr(collector, "BATCH", 2)  # 4 batches

    summary = asyncio.run(
        collector.Collector(collection, Driver({"rootdirectory": str(root)}), "test").run(
            collector.Options(delay=delay)
        )
    )

    assert summary.deleted["blobs"] == BLOBS
    assert not any(os.path.exists(root / blob_path(digest)) for digest in digests)
    assert all(store.known_blob_size(digest) is None for digest in digests)
    assert collection.blobs_being_deleted() == []


class _Counted(Driver):
    """The filesystem driver, counting the removals under way at once."""

    def __init__(self, root: Path) -> None:
        super().__init__({"rootdirectory": str(root)})
        self.running = self.most = 0

    async def _remove_many(self, paths: Sequence[str]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.05)  # long enough for the collector to go on to its next batches meanwhile
            await super()._remove_many(paths)
        finally:
            self.running -= 1


def test_two_batches_of_blob_files_are_removed_at_once_and_never_more(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, collection = stores
    root = tmp_path / "data"
    digests = _linked_blobs(store, root, BLOBS)
    monkeypatch.setattr(collector, "BATCH", 1)  # a batch per blob
    driver = _Counted(root)

    summary = asyncio.run(collector.Collector(collection, driver, "test").run(collector.Options(delay=0)))

    assert summary.deleted["blobs"] == BLOBS
    assert not any(os.path.exists(root / blob_path(digest)) for digest in digests)
    assert driver.most == collector.REMOVING_AT_ONCE == 2


class _FailingFirst(_Counted):
    """Fails the first removal once the second is under way."""

    failed = False

    async def _remove_many(self, paths: Sequence[str]) -> None:
        if not self.failed:
            self.failed = True
            async with asyncio.timeout(5):
                while self.running == 0:  # the second batch's removal has started
                    await asyncio.sleep(0.01)
            raise OSError(errno.EIO, "Input/output error")
        await super()._remove_many(paths)


@pytest.mark.parametrize("blobs", [2, 3], ids=["seen at the end", "seen before the next batch"])
def test_a_failed_removal_stops_the_collection_after_the_other_batch_under_way_ended(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blobs: int
) -> None:
    """The batch whose files failed stays marked as being deleted (the next collection finishes it), and so does a
    batch marked before the failure was seen; the one under way beside it is waited for and ended, not left
    running. The failure is seen once the batches ran out, or when a third batch waits for the first."""
    store, collection = stores
    root = tmp_path / "data"
    digests = sorted(_linked_blobs(store, root, blobs), key=str)
    monkeypatch.setattr(collector, "BATCH", 1)  # the first two batches under way when the first fails
    driver = _FailingFirst(root)

    with pytest.raises(OSError, match="Input/output error"):
        asyncio.run(collector.Collector(collection, driver, "test").run(collector.Options(delay=0)))

    marked = [str(digests[0]), *(str(digest) for digest in digests[2:])]
    assert sorted(digest for digest, _ in collection.blobs_being_deleted()) == marked
    assert os.path.exists(root / blob_path(digests[0]))
    assert not os.path.exists(root / blob_path(digests[1]))
    assert collection.counts()["blobs"] == blobs - 1

    again = collector.Collector(collection, Driver({"rootdirectory": str(root)}), "again")
    assert asyncio.run(again.run(collector.Options(delay=0))).deleted["blobs"] == blobs - 1
    assert not any(os.path.exists(root / blob_path(digest)) for digest in digests)


class _Stalled(Driver):
    """The filesystem driver whose removals stall (a stopped removal process, a hung object store) until told."""

    def __init__(self, root: Path) -> None:
        super().__init__({"rootdirectory": str(root)})
        self.go = asyncio.Event()
        self.cancelled = False

    async def _remove_many(self, paths: Sequence[str]) -> None:
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        await super()._remove_many(paths)


def test_a_stalled_removal_keeps_the_lease_and_is_stopped_when_it_is_lost(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the lease was renewed only between batches: a removal that stalled past it let another collection
    finish the same rows and an upload place a new copy of a blob, which the stalled removal then took away."""
    store, collection = stores
    root = tmp_path / "data"
    digests = _linked_blobs(store, root, 2)
    monkeypatch.setattr(collector, "LEASE_SECONDS", 0.6)
    monkeypatch.setattr(collector, "RENEW_AFTER", 0.1)

    async def scenario() -> None:
        driver = _Stalled(root)
        run = asyncio.create_task(collector.Collector(collection, driver, "test").run(collector.Options(delay=0)))
        await asyncio.sleep(1.5)  # past the lease it took: still its own, renewed meanwhile
        assert not await asyncio.to_thread(collection.acquire_lease, COLLECTION_LEASE, "another", 60)
        assert not driver.cancelled
        with sqlite3.connect(tmp_path / "registry.db") as db:  # the lease goes to another (this one was too slow)
            db.execute("UPDATE leases SET holder = 'another', expires_at = ?", (time.time() + 60,))
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(run, 5)
        assert driver.cancelled

    asyncio.run(scenario())
    assert all(os.path.exists(root / blob_path(digest)) for digest in digests)
    assert sorted(digest for digest, _ in collection.blobs_being_deleted()) == sorted(map(str, digests))


def test_a_collector_busy_collecting_does_not_also_finish_abandoned_deletions(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path
) -> None:
    """A worker looks for a dead collection's leftovers every few seconds with the collector that also runs its
    scheduled collections: while one runs, its own marks look abandoned, and the same holder's lease would simply
    be renewed. The look must stand aside, not finish the run's deletions beside it and release its lease."""
    store, collection = stores
    root = tmp_path / "data"
    digests = _linked_blobs(store, root, 2)

    async def scenario() -> None:
        driver = _Stalled(root)
        same = collector.Collector(collection, driver, "test")
        run = asyncio.create_task(same.run(collector.Options(delay=0)))
        while not await asyncio.to_thread(collection.blobs_being_deleted):
            await asyncio.sleep(0.01)
        with pytest.raises(collector.Busy):
            await asyncio.wait_for(same.finish_abandoned(), 5)  # before: it went on to remove the run's blobs
        assert not await asyncio.to_thread(collection.acquire_lease, COLLECTION_LEASE, "another", 60)
        driver.go.set()
        summary = await asyncio.wait_for(run, 5)
        assert summary.deleted["blobs"] == 2

    asyncio.run(scenario())
    assert not any(os.path.exists(root / blob_path(digest)) for digest in digests)
