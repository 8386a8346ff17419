"""Between a link's deletion and its blob's turn (the next phase, or with no grace period the same run), a push
may link the blob again: the collection must then keep its file and row, as it keeps a blob an upload has pinned,
while every other blob of the run goes, files and rows, batch after batch."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from docker_registry.core.digest import Digest, blob_path
from docker_registry.drivers.file import Driver
from docker_registry.server.gc import collector
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.metadata import MetadataStore

BLOBS = 9
RELINKED, PINNED = 3, 6
"""Blobs a push links again while the links phase runs, and one an upload holds."""


def _write_blob(root: Path, n: int) -> tuple[Digest, int]:
    content = f"blob {n}".encode()
    digest = Digest("sha256", hashlib.sha256(content).hexdigest())
    file = root / blob_path(digest)
    file.parent.mkdir(parents=True)
    file.write_bytes(content)
    return digest, len(content)


def test_a_blob_linked_again_after_its_link_went_is_kept(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, collection = stores
    root = tmp_path / "data"
    blobs = [_write_blob(root, n) for n in range(BLOBS)]
    for digest, size in blobs:
        store.link_blob("repo", digest, size)  # linked, never named by a manifest: every link is unreferenced
    relinked, pinned = blobs[RELINKED][0], blobs[PINNED][0]
    assert store.pin_blob(pinned, blobs[PINNED][1], "an upload")
    delete_links = collection.delete_unreferenced_links  # with no grace period, the single pass's deletion

    def then_a_push_links_one_again(keys: Sequence[tuple[int, str]], cutoff: float) -> int:
        deleted = delete_links(keys, cutoff)
        if any(digest == str(relinked) for _, digest in keys):
            store.link_blob("other", relinked, blobs[RELINKED][1])  # after its link went, before its blob's turn
        return deleted

    monkeypatch.setattr(collection, "delete_unreferenced_links", then_a_push_links_one_again)
    monkeypatch.setattr(collector, "BATCH", 2)  # 5 batches of links, then of blobs

    summary = asyncio.run(
        collector.Collector(collection, Driver({"rootdirectory": str(root)}), "test").run(collector.Options(delay=0))
    )

    kept = {relinked, pinned}
    assert summary.deleted["links"] == BLOBS
    assert summary.deleted["blobs"] == BLOBS - len(kept)
    for digest, _size in blobs:
        assert os.path.exists(root / blob_path(digest)) == (digest in kept), digest
    assert collection.counts()["blobs"] == len(kept)  # the rows of the two kept, no other
    assert store.blob_size("other", relinked) == blobs[RELINKED][1]  # served where the push linked it
    assert collection.blobs_being_deleted() == []
