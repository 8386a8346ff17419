"""The store's side of garbage collection, step by step where a process test cannot time it: a blob being
deleted is never linked again, an upload's pin keeps a blob, anything used again loses its candidate mark, and
the lease has one holder at a time."""

from __future__ import annotations

import hashlib
import json
import time

import sqlalchemy as sa

from docker_registry.core.digest import Digest
from docker_registry.server.registry.manifests import OCI_MANIFEST, parse_manifest
from docker_registry.server.store import migrate
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import COLLECTION_LEASE, V1Image, V1Tag

LAYER = b"layer bytes"
LAYER_DIGEST = Digest("sha256", hashlib.sha256(LAYER).hexdigest())


def _image() -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(LAYER_DIGEST), "size": 11}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}).encode()


def _unlinked_candidate(store: MetadataStore, collection: CollectionQueries) -> float:
    """A blob whose only link was deleted, marked by a collection; the time of the mark."""
    store.link_blob("repo", LAYER_DIGEST, len(LAYER))
    assert store.unlink_blob("repo", LAYER_DIGEST)
    now = time.time()
    collection.mark_blobs(now)
    assert collection.blob_candidates(now) == [(str(LAYER_DIGEST), len(LAYER))]
    return now


def test_an_upload_waits_while_a_blob_is_deleted_and_pins_it_after(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == [(str(LAYER_DIGEST), len(LAYER))]

    assert not store.pin_blob(LAYER_DIGEST, len(LAYER), "upload-1")  # the file is being deleted: wait
    assert store.known_blob_size(LAYER_DIGEST) is None  # an upload does not take the old copy as stored
    assert not store.mount_blob("other", LAYER_DIGEST, "repo")

    collection.end_blob_deletion([str(LAYER_DIGEST)])
    assert store.pin_blob(LAYER_DIGEST, len(LAYER), "upload-1")
    later = time.time()
    collection.mark_blobs(later)
    assert collection.blob_candidates(later) == []  # pinned: its upload publishes and links it next
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], later) == []


def test_a_pinned_candidate_is_not_deleted_and_the_link_ends_the_pin(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    store.create_upload("0b6f8a5e-8c1e-4a53-9b59-4f9a3c1e2d10", "repo")
    assert store.pin_blob(LAYER_DIGEST, len(LAYER), "0b6f8a5e-8c1e-4a53-9b59-4f9a3c1e2d10")  # a new upload of it

    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == []

    assert store.finish_upload("0b6f8a5e-8c1e-4a53-9b59-4f9a3c1e2d10", "repo", LAYER_DIGEST, len(LAYER), None)
    assert store.blob_size("repo", LAYER_DIGEST) == len(LAYER)
    assert collection.blob_candidates(time.time()) == []


def test_a_blob_an_upload_pinned_is_not_known_until_linked(stores: tuple[MetadataStore, CollectionQueries]) -> None:
    """The pin inserts the blob's row before the upload placed its bytes: a pull-through cache that took that row
    for a stored blob linked it and redirected to an S3 object not there yet (a 404)."""
    store, _ = stores
    upload = "5a1e2c3d-4b5f-4a6e-8d7c-9b0a1f2e3d4c"
    store.create_upload(upload, "repo")
    assert store.pin_blob(LAYER_DIGEST, len(LAYER), upload)
    assert store.known_blob_size(LAYER_DIGEST) is None  # being published
    assert store.finish_upload(upload, "repo", LAYER_DIGEST, len(LAYER), None)
    assert store.known_blob_size(LAYER_DIGEST) == len(LAYER)
    assert store.pin_blob(LAYER_DIGEST, len(LAYER), "another-upload")
    assert store.known_blob_size(LAYER_DIGEST) == len(LAYER)  # pushed again: the linked copy is in storage
    store.unpin_blob(LAYER_DIGEST, "another-upload")
    assert store.unlink_blob("repo", LAYER_DIGEST)
    assert store.known_blob_size(LAYER_DIGEST) == len(LAYER)  # linked nowhere, still stored until collected


def test_a_push_referencing_a_marked_link_clears_the_mark(stores: tuple[MetadataStore, CollectionQueries]) -> None:
    store, collection = stores
    store.link_blob("repo", LAYER_DIGEST, len(LAYER))
    now = time.time()
    collection.mark_links(now)
    assert collection.link_candidates(now) != []

    store.put_manifest("repo", parse_manifest(_image(), OCI_MANIFEST), ["v1"])

    assert store.blob_entry("repo", LAYER_DIGEST) == (len(LAYER), False)
    assert store.delete_manifest("repo", parse_manifest(_image(), OCI_MANIFEST).digest)
    assert collection.link_candidates(now) == []  # unreferenced again: the grace period starts anew


def test_marking_leaves_referenced_links_and_linked_blobs_unmarked(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """A mark starts the grace period: one on a link or blob still in use would let a later collection delete it
    without the full grace period once its image goes."""
    store, collection = stores
    store.link_blob("repo", LAYER_DIGEST, len(LAYER))
    store.put_manifest("repo", parse_manifest(_image(), OCI_MANIFEST), ["v1"])
    now = time.time()
    collection.mark_links(now)
    collection.mark_blobs(now)
    assert collection.link_candidates(now) == []
    assert collection.blob_candidates(now) == []

    assert store.delete_manifest("repo", parse_manifest(_image(), OCI_MANIFEST).digest)
    assert store.unlink_blob("repo", LAYER_DIGEST)
    assert collection.link_candidates(now) == []  # unreferenced and unlinked after `now`: no grace period began
    assert collection.blob_candidates(now) == []


def test_a_link_pushed_again_after_its_candidates_were_listed_is_not_deleted(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    store, collection = stores
    store.link_blob("repo", LAYER_DIGEST, len(LAYER))
    now = time.time()
    collection.mark_links(now)
    candidates = collection.link_candidates(now)

    store.put_manifest("repo", parse_manifest(_image(), OCI_MANIFEST), ["v1"])  # between listing and deleting

    assert collection.delete_links(candidates, now) == 0
    assert store.blob_size("repo", LAYER_DIGEST) == len(LAYER)


def test_one_lease_holder_at_a_time_and_an_expired_lease_passes_on(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    _, collection = stores
    assert collection.acquire_lease("gc", "node-a", 0.5)
    assert collection.acquire_lease("gc", "node-a", 0.5)  # renewed
    assert not collection.acquire_lease("gc", "node-b", 0.5)
    assert collection.lease_holder("gc") is not None
    time.sleep(0.6)  # node-a crashed: its lease runs out
    assert collection.acquire_lease("gc", "node-b", 30)
    collection.release_lease("gc", "node-b")
    assert collection.lease_holder("gc") is None


def test_a_claim_with_its_pin_keeps_the_blob_and_is_refused_at_another_size(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """The finishing PUT's claim and pin in one write (the running hash verified the bytes already): the pin keeps
    a candidate from deletion as `pin_blob` does, and nothing is claimed or pinned unless the size is the hashed one."""
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    upload = "6d1f3a2e-1c4b-4e8a-9f0d-2b7c5e8a1d34"
    store.create_upload(upload, "repo")
    assert store.claim_upload(upload, "repo", 0, "writer") is not None
    assert store.release_upload(upload, "writer", len(LAYER))  # the PATCH wrote and hashed the layer

    assert store.claim_upload_pinned(upload, "repo", len(LAYER) + 1, "t1", None, LAYER_DIGEST) == (None, False)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) != []  # nothing pinned it
    collection.end_blob_deletion([str(LAYER_DIGEST)])
    store.link_blob("repo", LAYER_DIGEST, len(LAYER))
    assert store.unlink_blob("repo", LAYER_DIGEST)
    now = time.time()
    collection.mark_blobs(now)

    claimed, pinned = store.claim_upload_pinned(upload, "repo", len(LAYER), "t2", None, LAYER_DIGEST)
    assert claimed is not None
    assert claimed.writer == "t2"
    assert pinned
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == []
    assert store.finish_upload(upload, "repo", LAYER_DIGEST, len(LAYER), "t2")
    assert store.blob_size("repo", LAYER_DIGEST) == len(LAYER)


def test_a_claim_with_its_pin_while_the_blob_is_deleted_claims_without_pinning(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) != []
    upload = "0c2e4a6b-8d1f-4a3c-9e5b-7f1a2c3d4e5f"
    store.create_upload(upload, "repo")
    claimed, pinned = store.claim_upload_pinned(upload, "repo", 0, "t1", None, LAYER_DIGEST)
    assert claimed is not None
    assert not pinned  # the caller waits for the deletion and pins then
    assert store.known_blob_size(LAYER_DIGEST) is None


def test_beginning_a_blob_deletion_locks_rows_first_only_on_postgresql(database_url: str) -> None:
    """PostgreSQL locks the batch's rows before the checking UPDATE (a new statement, so it sees what a push that
    held them committed); on SQLite the write transaction excludes every other writer already, and the lock would
    be a second pass over the batch's digests: the UPDATE is the only statement there."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    try:
        now = _unlinked_candidate(store, collection)
        statements: list[str] = []
        record = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == [(str(LAYER_DIGEST), len(LAYER))]
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        on_blobs = [s for s in statements if "blobs" in s.split(" WHERE ")[0]]
        kinds = [("SELECT FOR UPDATE" if s.endswith("FOR UPDATE") else s.split(" WHERE ")[0]) for s in on_blobs]
        postgresql = engine.dialect.name == "postgresql"
        update = "UPDATE blobs SET deleting_since=" + ("%(deleting_since)s" if postgresql else "?")
        expected = ["SELECT FOR UPDATE", update] if postgresql else [update]
        assert kinds == expected
        assert not store.mount_blob("other", LAYER_DIGEST, "repo")  # being deleted, on both
    finally:
        store.close()


def _presented(image_id: str, parent: V1Image | None) -> V1Image:
    """A presented image (complete, no payload checksum); its layer the shared one."""
    ancestry = [image_id, *(parent.ancestry if parent else [])]
    diff_id = Digest("sha256", hashlib.sha256(image_id.encode()).hexdigest())
    return V1Image(image_id, b"{}", parent.id if parent else None, ancestry, LAYER_DIGEST, 11, None, diff_id, True)


def test_presentations_of_deleted_manifests_go_with_the_images_nothing_else_reaches(database_url: str) -> None:
    """The v1 chains deleted manifests were presented as (they kept their layers for ever): a chain sharing its base
    with a live presentation loses its own images only, and a presented image a v1 push built on stays. A dry run
    counts the same and deletes nothing."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    try:
        live = parse_manifest(_image(), OCI_MANIFEST)
        store.link_blob("repo", LAYER_DIGEST, len(LAYER))
        store.put_manifest("repo", live, ["live"], (), False)
        base = _presented("b" * 64, None)
        top = _presented("c" * 64, base)
        assert store.present_v2_image(live.digest, [top, base], top.id) == top.id
        deleted = Digest("sha256", "d" * 64)  # a manifest no repository holds any more
        doomed = _presented("e" * 64, base)
        assert store.present_v2_image(deleted, [doomed, base], doomed.id) == doomed.id
        other = Digest("sha256", "f" * 64)
        built_on = _presented("1" * 64, None)
        assert store.present_v2_image(other, [built_on], built_on.id) == built_on.id
        pushed = V1Image(
            "2" * 64, b"{}", built_on.id, ["2" * 64, built_on.id], LAYER_DIGEST, 11, "sha256:x", None, True
        )
        assert store.import_v1_image(pushed)

        assert collection.forget_v1_presentations(dry_run=True) == 1
        assert store.v1_image(doomed.id) is not None
        assert collection.forget_v1_presentations(dry_run=False) == 1
        assert store.v1_image(doomed.id) is None
        for kept in (base, top, built_on, pushed):
            assert store.v1_image(kept.id) is not None
        with engine.connect() as conn:
            presented = conn.execute(sa.text("SELECT manifest_digest FROM v1_presented")).scalars().all()
        assert presented == [str(live.digest)]
        assert collection.forget_v1_presentations(dry_run=False) == 0
    finally:
        store.close()


def test_v1_pushes_never_completed_expire_unless_a_finished_image_is_built_on_them(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    try:
        half = V1Image("3" * 64, b"{}", None, ["3" * 64], LAYER_DIGEST, 11, None, None, False)
        base = V1Image("4" * 64, b"{}", None, ["4" * 64], LAYER_DIGEST, 11, None, None, False)
        on_top = V1Image("5" * 64, b"{}", base.id, ["5" * 64, base.id], LAYER_DIGEST, 11, "sha256:y", None, True)
        for image in (half, base, on_top):
            assert store.import_v1_image(image)
        assert collection.expire_v1_pushes(time.time() - 60, dry_run=False) == 0  # begun too recently
        later = time.time() + 1
        assert collection.expire_v1_pushes(later, dry_run=True) == 1
        assert store.v1_image(half.id) is not None
        assert collection.expire_v1_pushes(later, dry_run=False) == 1
        assert store.v1_image(half.id) is None
        assert store.v1_image(base.id) is not None
    finally:
        store.close()


def test_a_cached_manifest_naming_a_blob_being_deleted_does_not_stop_the_deletion(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """The pull-through cache stores manifests without checking their references: one naming a blob whose file a
    collection had already removed kept the row "being deleted" for good, and every upload of the digest waited,
    then failed."""
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == [(str(LAYER_DIGEST), len(LAYER))]
    store.put_manifest("cache/app", parse_manifest(_image(), OCI_MANIFEST), ["v1"], (), False)
    collection.end_blob_deletion([str(LAYER_DIGEST)])
    assert collection.blobs_being_deleted() == []
    assert store.pin_blob(LAYER_DIGEST, len(LAYER), "upload-2")


def test_a_v1_tag_is_not_written_for_an_image_a_collection_deleted_meanwhile(database_url: str) -> None:
    """A v1 tag PUT checks its image, publishes the bridge manifest, then writes the tag: a collection deleting the
    image in between (a presented image nothing reached) left a tag naming an image that was gone."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    try:
        manifest = parse_manifest(_image(), OCI_MANIFEST)
        store.link_blob("repo", LAYER_DIGEST, len(LAYER))
        store.put_manifest("repo", manifest, ["t"], (), True)
        image = V1Image("9" * 64, b"{}", None, ["9" * 64], LAYER_DIGEST, 11, "sha256:z", None, True)
        assert not store.put_v1_tag("repo", "t", manifest.digest, image.id, "{}")  # the image went meanwhile
        assert store.v1_tags("repo") == {"t": V1Tag(manifest.digest, None, None)}
        assert store.import_v1_image(image)
        assert store.put_v1_tag("repo", "t", manifest.digest, image.id, "{}")
        assert store.v1_tags("repo") == {"t": V1Tag(manifest.digest, image.id, "{}")}
    finally:
        store.close()


def test_a_blob_being_deleted_is_not_linked_by_a_cache_fill_or_a_v1_tag(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """`link_blob` (the pull-through cache linking a blob stored for another name, a v1 tag linking its layers)
    linked a blob whose deletion had begun: the collection then removed the file and kept the row, linked, for
    good: HEAD 200, GET 404, every upload of the digest refused."""
    store, collection = stores
    now = _unlinked_candidate(store, collection)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == [(str(LAYER_DIGEST), len(LAYER))]
    assert not store.link_blob("cache/app", LAYER_DIGEST, len(LAYER), recorded=True)
    assert store.blob_size("cache/app", LAYER_DIGEST) is None
    collection.end_blob_deletion([str(LAYER_DIGEST)])
    assert collection.blobs_being_deleted() == []
    # deleted since the caller found its row: no file, so no link (a placeholder row made here was served as the blob)
    assert not store.link_blob("cache/app", LAYER_DIGEST, len(LAYER), recorded=True)
    assert store.blob_size("cache/app", LAYER_DIGEST) is None


def test_deletions_are_abandoned_only_when_no_live_collection_holds_the_lease(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """Every worker asks every few seconds (`gc.background`): a collection under way must not look abandoned, or
    each look took the lease (a write transaction) only to be told it was busy."""
    store, collection = stores
    dead: set[str | None] = {"dead process"}
    assert not collection.deletions_abandoned(COLLECTION_LEASE, dead.__contains__)  # nothing marked
    now = _unlinked_candidate(store, collection)
    assert collection.begin_blob_deletion([str(LAYER_DIGEST)], now) == [(str(LAYER_DIGEST), len(LAYER))]
    assert collection.deletions_abandoned(COLLECTION_LEASE, dead.__contains__)  # marked, and no lease
    assert collection.acquire_lease(COLLECTION_LEASE, "collector", 60, "live process")
    assert not collection.deletions_abandoned(COLLECTION_LEASE, dead.__contains__)  # a live collection's marks
    dead.add("live process")
    assert collection.deletions_abandoned(COLLECTION_LEASE, dead.__contains__)  # its holder died on this host
    dead.discard("live process")
    assert collection.acquire_lease(COLLECTION_LEASE, "collector", -1, "live process")  # renewed, already expired
    assert collection.deletions_abandoned(COLLECTION_LEASE, dead.__contains__)
