"""The store's prebuilt statements (built once with placeholders, run with parameters) on SQLite, called directly:
every variant of a claim, sessions ended with and without a token, the repository created on its first write only,
tags moved, references checked with only the queries a manifest needs; and each dialect's version compiles."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from docker_registry.core.digest import Digest, parse_digest
from docker_registry.server.store import base, manifests, migrate, uploads
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import BadReference, Descriptor, Manifest
from docker_registry.server.store.tables import uploads as uploads_table


def digest(data: bytes) -> Digest:
    return parse_digest("sha256:" + hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    return MetadataStore(engine)


def image(*layers: bytes) -> Manifest:
    raw = b"image" + b"".join(layers)
    return Manifest(
        raw,
        "application/vnd.oci.image.manifest.v1+json",
        digest(raw),
        [Descriptor("l", digest(x), len(x)) for x in layers],
    )


def index(*children: Manifest) -> Manifest:
    raw = b"index" + b"".join(c.raw for c in children)
    described = [Descriptor(c.media_type, c.digest, len(c.raw)) for c in children]
    return Manifest(raw, "application/vnd.oci.image.index.v1+json", digest(raw), children=described)


def test_claims_in_every_variant(store: MetadataStore) -> None:
    store.create_upload("u", "repo")
    assert store.claim_upload("u", "other", None, "t1") is None, "another repository's session"
    assert store.claim_upload("u", "repo", 5, "t1") is None, "not the size expected"
    claimed = store.claim_upload("u", "repo", 0, "t1", "proc")
    assert claimed is not None
    assert (claimed.size, claimed.writer, claimed.writer_process) == (0, "t1", "proc")
    assert store.claim_upload("u", "repo", None, "t2") is None, "held by a live writer"
    assert store.claim_upload("u", "repo", None, "t2", takeover="someone-else") is None
    taken = store.claim_upload("u", "repo", None, "t2", "p2", takeover="t1")
    assert taken is not None
    assert taken.writer == "t2"
    assert not store.renew_upload("u", "t1"), "the claim is t2's now"
    assert store.renew_upload("u", "t2")
    assert store.release_upload("u", "t2", 42)
    released = store.upload("u")
    assert released is not None
    assert (released.size, released.writer, released.writer_since) == (42, None, None)
    assert store.claim_upload("u", "repo", 42, "t3") is not None
    with store.engine.begin() as conn:  # a writer that died long ago
        conn.execute(sa.update(uploads_table).values(writer_since=time.time() - 3600))
    assert store.claim_upload("u", "repo", None, "t4") is not None, "a stale claim is free"
    ended = store.delete_upload("u")
    assert ended is not None
    assert ended.writer == "t4"
    assert store.upload("u") is None
    assert store.delete_upload("u") is None


def test_finish_with_and_without_a_token(store: MetadataStore) -> None:
    blob = digest(b"blob")
    store.create_upload("u", "repo")
    assert store.claim_upload("u", "repo", None, "t") is not None
    assert not store.finish_upload("u", "repo", blob, 4, "lost"), "not the claim's token: nothing linked"
    assert store.blob_size("repo", blob) is None
    assert not store.repository_exists("repo")
    assert store.finish_upload("u", "repo", blob, 4, "t")
    assert store.upload("u") is None
    assert store.blob_size("repo", blob) == 4
    assert store.known_blob_size(blob) == 4
    store.create_upload("v", "repo")
    assert store.claim_upload("v", "repo", None, "w") is not None
    assert store.finish_upload("v", "repo", blob, 4, None), "no token: linked whatever the session's state"
    assert store.upload("v") is not None, "without a token only an unclaimed session ends"
    store.release_upload("v", "w", 0)
    assert store.finish_upload("v", "repo", blob, 4, None)
    assert store.upload("v") is None


def test_repository_created_once_and_links_idempotent(store: MetadataStore) -> None:
    blob = digest(b"x")
    assert not store.repository_exists("repo")
    store.link_blob("repo", blob, 1)
    store.link_blob("repo", blob, 1)
    store.link_blob("other", blob, 1)
    assert store.repository_exists("repo")
    assert store.repository_exists("other")
    with store.engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT name, id FROM repositories ORDER BY id")).all()
    assert [name for name, _ in ids] == ["repo", "other"]
    assert store.blob_size("repo", blob) == 1
    assert store.blob_size("nowhere", blob) is None
    assert store.unlink_blob("repo", blob)
    assert not store.unlink_blob("repo", blob)
    assert not store.unlink_blob("nowhere", blob)
    assert store.blob_size("repo", blob) is None
    assert store.known_blob_size(blob) == 1


def test_tags_move_and_references_are_checked(store: MetadataStore) -> None:
    first, second = image(b"a", b"b"), image(b"c")
    for layer in (b"a", b"b"):
        store.link_blob("repo", digest(layer), 1)
    with pytest.raises(BadReference) as refused:
        store.put_manifest("repo", second, ["latest"])
    assert refused.value.kind == "blob"
    assert refused.value.stored_size is None
    store.put_manifest("repo", first, ["latest", "v1", "latest"])
    store.put_manifest("repo", first, ["v2"])  # stored already: only the tag is new
    assert store.tag_digest("repo", "latest") == first.digest
    assert store.tag_digest("repo", "v2") == first.digest
    store.link_blob("repo", digest(b"c"), 1)
    store.put_manifest("repo", second, ["latest"])
    assert store.tag_digest("repo", "latest") == second.digest
    assert store.tag_digest("repo", "v1") == first.digest
    assert store.tag_digest("repo", "none") is None
    assert store.tag_digest("nowhere", "latest") is None
    assert store.tags("repo", None, None) == ["latest", "v1", "v2"]
    assert store.delete_tag("repo", "v2")
    assert not store.delete_tag("repo", "v2")
    assert not store.delete_tag("x", "v1")
    stored = store.manifest("repo", first.digest)
    assert stored is not None
    assert stored.content == first.raw

    wrong = image(b"a")
    wrong.blobs = [Descriptor("l", digest(b"a"), 2)]
    with pytest.raises(BadReference) as sized:
        store.put_manifest("repo", wrong)
    assert (sized.value.declared_size, sized.value.stored_size) == (2, 1)

    both = index(first, second)
    store.put_manifest("repo", both, ["multi"])
    assert store.tag_digest("repo", "multi") == both.digest
    with pytest.raises(BadReference) as missing:
        store.put_manifest("repo", index(first, image(b"zzz")))
    assert missing.value.kind == "manifest"
    store.put_manifest("repo", Manifest(b"{}", "application/json", digest(b"{}")), ["bare"])
    assert store.tag_digest("repo", "bare") == digest(b"{}")


def test_a_manifest_without_children_or_blobs_skips_that_query(store: MetadataStore) -> None:
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.link_blob("repo", digest(b"a"), 1)
    plain = image(b"a")
    store.put_manifest("repo", plain)
    store.put_manifest("repo", index(plain))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert sum("FROM repository_blobs" in s for s in selects) == 1, "only the image's blob check"
    assert sum("manifests.size" in s for s in selects) == 1, "only the index's child check"


def test_references_are_looked_up_one_by_one_on_the_cursor_up_to_a_limit(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest's few references are checked each by a statement on the cursor (no expanding IN, which
    SQLAlchemy compiles and executes again for each count of digests); past `ONE_BY_ONE` of a kind, one IN query."""
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    layers = [bytes([i]) for i in range(3)]
    for layer in layers:
        store.link_blob("repo", digest(layer), 1)
    plain = image(*layers, layers[0])  # a layer named twice is looked up once
    statements.clear()
    store.put_manifest("repo", plain)
    store.put_manifest("repo", index(plain))
    checks = [s for s in statements if s.lstrip().upper().startswith("SELECT") and ".size" in s]
    assert len(checks) == 4, "three distinct blobs, one child"
    assert not [s for s in checks if "IN (" in s]

    monkeypatch.setattr(manifests, "ONE_BY_ONE", 2)
    statements.clear()
    store.put_manifest("repo", plain, ["many"])
    checks = [s for s in statements if s.lstrip().upper().startswith("SELECT") and ".size" in s]
    assert len(checks) == 1
    assert "IN (" in checks[0]


@pytest.mark.parametrize("one_by_one", [manifests.ONE_BY_ONE, 0], ids=["one by one", "IN query"])
def test_both_ways_of_checking_references_refuse_alike(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch, one_by_one: int
) -> None:
    monkeypatch.setattr(manifests, "ONE_BY_ONE", one_by_one)
    store.link_blob("repo", digest(b"a"), 1)
    store.link_blob("repo", digest(b"b"), 1)
    store.link_blob("other", digest(b"c"), 1)
    with pytest.raises(BadReference) as missing:
        store.put_manifest("repo", image(b"a", b"b", b"c"))
    assert (missing.value.kind, missing.value.digest, missing.value.stored_size) == ("blob", digest(b"c"), None)
    wrong = image(b"a", b"b")
    wrong.blobs[1] = Descriptor("l", digest(b"b"), 7)
    with pytest.raises(BadReference) as sized:
        store.put_manifest("repo", wrong)
    assert (sized.value.digest, sized.value.declared_size, sized.value.stored_size) == (digest(b"b"), 7, 1)
    child = image(b"a", b"b")
    store.put_manifest("repo", child, ["child"])
    store.put_manifest("repo", index(child), ["multi"])
    assert store.tag_digest("repo", "multi") == index(child).digest
    resized = index(child)
    resized.children = [Descriptor(child.media_type, child.digest, len(child.raw) + 1)]
    with pytest.raises(BadReference) as child_sized:
        store.put_manifest("repo", resized)
    assert (child_sized.value.kind, child_sized.value.stored_size) == ("manifest", len(child.raw))
    with pytest.raises(BadReference) as child_missing:
        store.put_manifest("other", index(child))
    assert (child_missing.value.kind, child_missing.value.stored_size) == ("manifest", None)


def test_a_manifest_tagged_again_is_looked_up_not_inserted(store: MetadataStore) -> None:
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.link_blob("repo", digest(b"a"), 1)
    plain = image(b"a")
    statements.clear()
    store.put_manifest("repo", plain, ["v1"])
    assert sum(s.startswith("INSERT INTO manifests") for s in statements) == 1
    assert sum(s.startswith("INSERT INTO manifest_references") for s in statements) == 1
    statements.clear()
    store.put_manifest("repo", plain, ["v2"])
    assert not [s for s in statements if s.startswith(("INSERT INTO manifests", "INSERT INTO manifest_references"))]
    assert store.tag_digest("repo", "v1") == store.tag_digest("repo", "v2") == plain.digest


def test_a_mount_links_the_blob_its_look_up_found_without_inserting_its_row(store: MetadataStore) -> None:
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.link_blob("source", digest(b"a"), 1)
    assert sum(s.startswith("INSERT INTO blobs") for s in statements) == 1, "an upload's link records the blob"
    statements.clear()
    assert store.mount_blob("target", digest(b"a"), "source")
    assert not [s for s in statements if s.startswith("INSERT INTO blobs")]
    assert store.blob_size("target", digest(b"a")) == 1
    assert store.mount_blob("target", digest(b"a"), "source"), "again: idempotent"
    assert not store.mount_blob("target", digest(b"b"), "source")
    assert store.blob_size("target", digest(b"b")) is None


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_every_dialect_statement_compiles(dialect: sa.Dialect) -> None:
    name = dialect.name
    for statement in (
        base._INSERT_REPOSITORY.for_dialect(name),
        base._INSERT_BLOB.for_dialect(name),
        base._INSERT_REPOSITORY_BLOB.for_dialect(name),
        manifests._INSERT_MANIFEST.for_dialect(name),
        manifests._UPSERT_TAG.for_dialect(name),
    ):
        assert "ON CONFLICT" in str(statement.compile(dialect=dialect))
    upsert = str(manifests._UPSERT_TAG.for_dialect(name).compile(dialect=dialect))
    assert "excluded.manifest_id" in upsert
    assert "excluded.updated_at" in upsert
    shared = str(manifests._LINKED_BLOBS.compile(dialect=dialect))
    assert ("FOR SHARE OF repository_blobs" in shared) == (name == "postgresql")
    for claim in uploads._CLAIM.values():
        assert "RETURNING" in str(claim.for_dialect(name).compile(dialect=dialect))


def test_prepared_statements_on_the_cursor_fire_the_engines_events(store: MetadataStore) -> None:
    """Prepared statements bypass SQLAlchemy's execution context on SQLite, but the engine's cursor events (which
    the database metrics time statements by) see each one, and so do BEGIN and the cache signal's PRAGMAs."""
    seen: list[tuple[str, str]] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def before(conn: sa.Connection, cursor: object, statement: str, *args: object) -> None:
        seen.append(("before", statement.split()[0]))

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def after(conn: sa.Connection, cursor: object, statement: str, *args: object) -> None:
        seen.append(("after", statement.split()[0]))

    store.create_upload("u", "repo")
    assert store.claim_upload("u", "repo", 0, "t") is not None
    assert store.finish_upload("u", "repo", digest(b"blob"), 4, "t")
    kinds = [kind for event, kind in seen if event == "after"]
    assert [kind for event, kind in seen if event == "before"] == kinds, "every statement seen before and after"
    assert kinds.count("BEGIN") == 3
    # only the finish links a blob; session writes change nothing the caches hold, so they signal nothing
    assert kinds.count("PRAGMA") == 2, "user_version read and written once, by the finish's transaction"
    assert {"INSERT", "UPDATE", "DELETE", "SELECT"} <= set(kinds)


def test_prepared_statements_on_the_cursor_fail_as_sqlalchemy_would(store: MetadataStore) -> None:
    """A failing statement raises SQLAlchemy's exception (a duplicate key: IntegrityError, which a write refusing
    rolls back and a caller can tell apart), after the engine's `handle_error` hooks, and the store goes on."""
    handled: list[BaseException] = []

    @sa.event.listens_for(store.engine, "handle_error")
    def on_error(context: sa.engine.ExceptionContext) -> None:
        handled.append(context.original_exception)

    store.create_upload("u", "repo")
    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
        store.create_upload("u", "repo")
    assert len(handled) == 1
    assert store.claim_upload("u", "repo", 0, "t") is not None, "the failed write rolled back; the next works"


def test_prepared_results_on_the_cursor_read_as_sqlalchemys(store: MetadataStore) -> None:
    """Rows by attribute (`first`), by column name (`mappings`), one value (`scalar`, `scalar_one`) and counts."""
    statement = uploads._UPLOAD
    store.create_upload("u", "repo", owner="alice")
    with store.engine.begin() as conn:
        row = statement.run(conn, {"upload_id": "u"}).first()
        assert (row.id, row.repository, row.size, row.owner) == ("u", "repo", 0, "alice")
        mapping = statement.run(conn, {"upload_id": "u"}).mappings().first()
        assert mapping is not None
        assert (mapping["id"], mapping["writer"]) == ("u", None)
        assert statement.run(conn, {"upload_id": "none"}).first() is None
        assert statement.run(conn, {"upload_id": "none"}).mappings().first() is None
        assert statement.run(conn, {"upload_id": "u"}).scalar() == "u"
        assert statement.run(conn, {"upload_id": "none"}).scalar() is None
        with pytest.raises(sa.exc.NoResultFound):
            statement.run(conn, {"upload_id": "none"}).scalar_one()
        renewed = uploads._RENEW.run(conn, [{"upload_id": "u", "token": None, "now": 1.0}])
        assert renewed.rowcount == 0, "no claim to renew"
