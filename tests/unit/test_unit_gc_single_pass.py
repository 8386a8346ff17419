"""With no grace period a collection checks and deletes links and blobs in one pass, writing no candidate marks
(`Collector._links`, `Collector._blobs`): whatever a manifest references, a repository links or an upload pins when
the deleting transaction checks it stays, and so does whatever was made after the collection began, on SQLite and
PostgreSQL alike."""

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
from docker_registry.server.store.tables import repository_blobs


def _blob(name: str) -> tuple[Digest, int]:
    content = name.encode()
    return Digest("sha256", hashlib.sha256(content).hexdigest()), len(content)


def _image(config: tuple[Digest, int]) -> bytes:
    digest, size = config
    reference = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(digest), "size": size}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": reference, "layers": []}).encode()


def test_the_single_pass_deletes_only_what_nothing_uses_when_it_checks(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    try:
        named, unused, pushed_meanwhile, pinned, late = (
            _blob(name) for name in ("named", "unused", "push", "pin", "late")
        )
        for digest, size in (named, unused, pushed_meanwhile, pinned):
            store.link_blob("repo", digest, size)
        store.put_manifest("repo", parse_manifest(_image(named), OCI_MANIFEST), ["v1"])
        assert store.unlink_blob("repo", pinned[0])
        assert store.pin_blob(pinned[0], pinned[1], "an upload")  # pushed again: published and linked next
        with engine.begin() as conn:  # a mark an earlier collection (with a grace period) left on a link in use
            conn.execute(
                repository_blobs.update()
                .where(repository_blobs.c.digest == str(named[0]))
                .values(gc_candidate_since=1.0)
            )
        time.sleep(0.01)
        cutoff = time.time()  # the collection begins
        time.sleep(0.01)
        store.link_blob("repo", late[0], late[1])  # an upload that finished while it runs

        collection.unmark_links()
        keys = collection.unreferenced_links()
        assert [digest for _, digest in keys] == sorted(str(d) for d, _ in (unused, pushed_meanwhile, late))
        store.put_manifest("repo", parse_manifest(_image(pushed_meanwhile), OCI_MANIFEST), ["v2"])  # before deleting
        assert collection.delete_unreferenced_links(keys, cutoff) == 1

        assert store.blob_entry("repo", named[0]) == (named[1], False)  # in use: unmarked
        assert store.blob_size("repo", unused[0]) is None
        assert store.blob_size("repo", pushed_meanwhile[0]) == pushed_meanwhile[1]
        assert store.blob_size("repo", late[0]) == late[1]

        assert store.unlink_blob("repo", late[0])  # unlinked now, but its row was made after the cutoff
        collection.unmark_blobs(time.time())
        doomed, after = [], ""
        while after is not None:  # one blob a batch: the cursor goes past those it keeps
            batch, after = collection.begin_unlinked_blob_deletion(after, cutoff, 1)
            doomed += batch
        assert doomed == [(str(unused[0]), unused[1])]
        assert collection.blobs_being_deleted() == doomed
        assert not store.mount_blob("other", unused[0], "repo")
        assert store.known_blob_size(pinned[0]) is None  # still being published
        assert store.known_blob_size(late[0]) == late[1]
    finally:
        store.close()


def test_beginning_unlinked_blob_deletions_locks_the_batch_first_only_on_postgresql(database_url: str) -> None:
    """On PostgreSQL the batch's rows are locked as they are chosen, and a new statement checks them again (it sees
    what a push holding one committed meanwhile); SQLite's write transaction excludes every other writer already."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store, collection = MetadataStore(engine), CollectionQueries(engine)
    try:
        digest, size = _blob("unused")
        store.link_blob("repo", digest, size)
        assert store.unlink_blob("repo", digest)
        statements: list[str] = []
        record = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert collection.begin_unlinked_blob_deletion("", time.time(), 10) == ([(str(digest), size)], None)
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        chosen, update = (s for s in statements if "blobs" in s and not s.startswith(("BEGIN", "SAVEPOINT")))
        assert chosen.startswith("SELECT")
        assert update.startswith("UPDATE blobs")
        postgresql = engine.dialect.name == "postgresql"
        assert chosen.endswith("FOR UPDATE") == postgresql
        assert ("FROM repository_blobs" in update.split(" RETURNING ")[0]) == postgresql  # linked? checked again
    finally:
        store.close()
