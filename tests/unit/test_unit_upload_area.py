"""Where a session's bytes live: a session begun now is one file, `uploads/<id>` (no folder made and pruned per
blob); one begun before the change (a version-4 id) keeps `uploads/<id>/data` and is continued, finished and
purged there. The layout is read from the id alone."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from docker_registry.core.digest import blob_path, parse_digest
from docker_registry.drivers.file import Driver
from docker_registry.server.gc import collector
from docker_registry.server.gc.summary import Summary
from docker_registry.server.registry import uploads as uploads_module
from docker_registry.server.registry.upload_area import new_upload_id, upload_area, upload_path
from docker_registry.server.registry.uploads import Uploads
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_new_ids_are_random_version_8_uuids_in_canonical_form() -> None:
    ids = {new_upload_id(flat=True) for _ in range(2000)}
    assert len(ids) == 2000
    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
        assert str(parsed) == made
        assert uploads_module._check_id(made) == made  # taken as it is, as a version-4 id was
    assert {made[19] for made in ids} == set("89ab")  # the variant's two bits, the rest random
    assert uuid.UUID(new_upload_id(flat=False)).version == 4


def test_the_id_tells_the_layout() -> None:
    flat, legacy = new_upload_id(flat=True), str(uuid.uuid4())
    assert upload_path(flat) == f"uploads/{flat}"
    assert upload_path(legacy) == f"uploads/{legacy}/data"
    assert upload_path(str(uuid.uuid5(uuid.NAMESPACE_URL, "x"))).endswith("/data")  # the pull-through cache's
    assert upload_path(f"import-{flat}").endswith("/data")  # not a session's id (the importer's staging folder)
    assert upload_area(flat) == f"uploads/{flat}"
    assert upload_area(legacy) == f"uploads/{legacy}"


@pytest.fixture
def parts(stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path) -> tuple[Uploads, MetadataStore, Path]:
    store, _ = stores
    root = tmp_path / "data"
    return Uploads(AsyncMetadataStore(store), Driver({"rootdirectory": str(root)})), store, root


async def test_a_new_session_is_one_file_with_no_folder_of_its_own(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, root = parts
    upload = await uploads.start("repo")
    assert await uploads.append("repo", upload.id, body(b"abc" * 1000), start=0) == 3000
    assert (root / "uploads" / upload.id).is_file()
    assert await uploads.append("repo", upload.id, body(b"def"), start=3000) == 3003
    digest = parse_digest("sha256:" + hashlib.sha256(b"abc" * 1000 + b"def").hexdigest())
    await Uploads(AsyncMetadataStore(store), uploads._driver).complete("repo", upload.id, digest, None)  # rehashed
    assert (root / blob_path(digest)).read_bytes() == b"abc" * 1000 + b"def"
    assert not (root / "uploads" / upload.id).exists()


async def test_a_session_begun_before_the_change_is_continued_and_finished_in_its_folder(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, root = parts
    old = str(uuid.uuid4())  # as the previous version named it, its first chunk written by that version
    store.create_upload(old, "repo")
    (root / "uploads" / old).mkdir(parents=True)
    (root / "uploads" / old / "data").write_bytes(b"first ")
    assert store.claim_upload(old, "repo", 0, "old-writer")
    assert store.release_upload(old, "old-writer", 6)

    assert (await uploads.get("repo", old)).size == 6
    assert await uploads.append("repo", old, body(b"second"), start=6) == 12
    assert (root / "uploads" / old / "data").read_bytes() == b"first second"
    digest = parse_digest("sha256:" + hashlib.sha256(b"first second").hexdigest())
    await Uploads(AsyncMetadataStore(store), uploads._driver).complete("repo", old, digest, None)
    assert (root / blob_path(digest)).read_bytes() == b"first second"
    assert store.blob_size("repo", digest) == 12
    assert not (root / "uploads" / old).exists()


async def test_a_cancelled_session_leaves_nothing_in_either_layout(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, root = parts
    new = await uploads.start("repo")
    old = str(uuid.uuid4())
    store.create_upload(old, "repo")
    for upload_id in (new.id, old):
        await uploads.append("repo", upload_id, body(b"bytes"), start=0)
        await uploads.cancel(await uploads.get("repo", upload_id))
    assert not (root / "uploads").exists() or list((root / "uploads").iterdir()) == []


def test_purging_removes_expired_sessions_and_orphans_of_both_layouts(
    stores: tuple[MetadataStore, CollectionQueries], tmp_path: Path
) -> None:
    store, collection = stores
    root = tmp_path / "data"
    (root / "uploads").mkdir(parents=True)
    expired = {new_upload_id(flat=True), str(uuid.uuid4())}  # sessions the database knows, begun long ago
    orphans = {new_upload_id(flat=True), str(uuid.uuid4())}  # data of sessions it no longer knows
    live = {new_upload_id(flat=True), str(uuid.uuid4())}  # recent sessions
    for upload_id in expired | live:
        store.create_upload(upload_id, "repo")
    long_ago = time.time() - 3600
    for upload_id in expired | orphans | live:
        data = root / upload_path(upload_id)
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(b"some bytes")
        if upload_id not in live:
            os.utime(data, (long_ago, long_ago))
    cutoff = long_ago + 60
    with collection.engine.begin() as conn:  # the expired ones were begun before the cutoff
        conn.exec_driver_sql("UPDATE uploads SET created_at = ? WHERE id IN (?, ?)", (long_ago, *sorted(expired)))

    summary = Summary(dry_run=False)
    purge = collector.Collector(collection, Driver({"rootdirectory": str(root)}), "test").purge_uploads
    asyncio.run(purge(cutoff, False, summary))

    assert summary.deleted["uploads"] == 4
    assert sorted(p.name for p in (root / "uploads").iterdir()) == sorted(live)
    assert collection.upload_ids() == live


@pytest.mark.parametrize("arrived", [False, True])
async def test_a_new_session_written_by_an_older_node_is_unknown_here_not_an_error(parts, arrived: bool) -> None:  # type: ignore[no-untyped-def]
    """Nodes of two versions on one root (an upgrade done node by node, which docs/deployment.md advises against):
    an older node wrote a new session's first chunk in its folder; this node finds a folder where its object
    should be, and answers BLOB_UPLOAD_UNKNOWN (404: the client starts again), not a 500."""
    uploads, store, root = parts
    upload = await uploads.start("repo")
    (root / "uploads" / upload.id).mkdir(parents=True)
    (root / "uploads" / upload.id / "data").write_bytes(b"first ")
    assert store.claim_upload(upload.id, "repo", 0, "older")
    assert store.release_upload(upload.id, "older", 6)
    with pytest.raises(uploads_module.RegistryError) as raised:
        await uploads.append("repo", upload.id, body(b"second"), start=6, arrived=arrived)
    assert raised.value.error.status == 404
    digest = parse_digest("sha256:" + hashlib.sha256(b"first ").hexdigest())
    with pytest.raises(uploads_module.RegistryError) as finishing:
        await uploads.complete("repo", upload.id, digest, None)
    assert finishing.value.error.status == 404
