"""A collection deletes unlinked blobs in batches, pipelined (a batch's rows go while the next batch's files go):
every batch's files and rows end up deleted and counted, not only the last one's. Process tests never have more
than one batch (2,000 blobs), so the batch size is made small here."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from docker_registry.core.digest import Digest, blob_path
from docker_registry.drivers.file import Driver
from docker_registry.server.gc import collector
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.metadata import MetadataStore

BLOBS = 7


@pytest.mark.parametrize("delay", [0, 60], ids=["single pass", "marked candidates"])
def test_every_batch_of_unlinked_blobs_is_deleted_files_and_rows(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float
) -> None:
    store, collection = stores
    root = tmp_path / "data"
    digests = []
    for n in range(BLOBS):
        content = f"blob {n}".encode()
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        file = root / blob_path(digest)
        file.parent.mkdir(parents=True)
        file.write_bytes(content)
        store.link_blob("repo", digest, len(content))
        assert store.unlink_blob("repo", digest)
        digests.append(digest)
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
