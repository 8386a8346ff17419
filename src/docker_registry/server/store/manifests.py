"""Manifests: their bytes and what they reference, tags moved by a push, referrers, deletes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import Insert, StoreBase, matchable, per_dialect, stored_digest
from .models import BadReference, EventRecord, Manifest, Referrer, StoredManifest
from .prepared import Prepared
from .tables import blobs, manifest_references, manifests, repositories, repository_blobs, tags

_MANIFEST = Prepared(
    sa.select(manifests.c.media_type, manifests.c.content)
    .select_from(manifests.join(repositories))
    .where(repositories.c.name == sa.bindparam("repository"), manifests.c.digest == sa.bindparam("digest"))
)


def _tag_row(insert: Insert) -> Any:
    """A tag's insert, for either dialect's `insert` (`per_dialect`)."""
    return insert(tags).values(
        repository_id=sa.bindparam("repository_id"),
        name=sa.bindparam("tag"),
        manifest_id=sa.bindparam("manifest_id"),
        updated_at=sa.bindparam("now"),
    )


_UPSERT_TAG = Prepared(
    per_dialect(
        lambda insert: (statement := _tag_row(insert)).on_conflict_do_update(
            index_elements=["repository_id", "name"],
            set_={"manifest_id": statement.excluded.manifest_id, "updated_at": statement.excluded.updated_at},
        )
    )
)
_INSERT_TAG = Prepared(
    per_dialect(
        lambda insert: (
            _tag_row(insert).on_conflict_do_nothing(index_elements=["repository_id", "name"]).returning(tags.c.name)
        )
    )
)
"""A tag set only where the repository has none of that name (an import's): a row comes back when it was."""
_INSERT_MANIFEST = Prepared(
    per_dialect(
        lambda insert: (
            insert(manifests)
            .values(
                repository_id=sa.bindparam("repository_id"),
                digest=sa.bindparam("digest"),
                media_type=sa.bindparam("media_type"),
                content=sa.bindparam("content"),
                size=sa.bindparam("size"),
                subject_digest=sa.bindparam("subject_digest"),
                artifact_type=sa.bindparam("artifact_type"),
                annotations=sa.bindparam("annotations"),
                created_at=sa.bindparam("now"),
            )
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
            .returning(manifests.c.id)
        )
    )
)
_FIND_MANIFEST = sa.select(manifests.c.id).where(
    manifests.c.repository_id == sa.bindparam("repository_id"), manifests.c.digest == sa.bindparam("digest")
)
_MANIFEST_ID = Prepared({"sqlite": _FIND_MANIFEST, "postgresql": _FIND_MANIFEST.with_for_update(key_share=True)})
"""The manifest's id, for a push that tags or references it. On PostgreSQL the row is locked (FOR KEY SHARE) until
the push commits: a delete by digest committed meanwhile would otherwise leave the new tag pointing at no row (a
foreign key violation: 21 of 100 racing pushes failed so across two nodes), and one that comes first is waited
for and then found gone, so the manifest is stored again. SQLite's write transaction excludes every other writer."""
_INSERT_REFERENCES = Prepared(
    manifest_references.insert().values(
        manifest_id=sa.bindparam("manifest_id"), digest=sa.bindparam("digest"), kind=sa.bindparam("kind")
    )
)
_LINKED = (
    sa.select(repository_blobs.c.digest, blobs.c.size)
    .select_from(repository_blobs.join(blobs))
    # a blob a collection is deleting is no blob to reference, even linked (a link made without a pin)
    .where(repository_blobs.c.repository_id == sa.bindparam("repository_id"), blobs.c.deleting_since.is_(None))
)
_CHILDREN = sa.select(manifests.c.digest, manifests.c.size).where(
    manifests.c.repository_id == sa.bindparam("repository_id")
)
# FOR SHARE on PostgreSQL (SQLite ignores it: its write transaction excludes every other writer)
_LINKED_BLOBS = _LINKED.where(repository_blobs.c.digest.in_(sa.bindparam("digests", expanding=True))).with_for_update(
    read=True, of=repository_blobs
)
_CHILD_MANIFESTS = _CHILDREN.where(manifests.c.digest.in_(sa.bindparam("digests", expanding=True))).with_for_update(
    read=True
)
# The same, one digest at a time: SQLite runs these on the cursor (`Prepared`) in a few microseconds each, where the
# expanding IN above goes through SQLAlchemy's execution of a statement compiled again for every count of digests
# (profiled: over half of a tag PUT's statement time, all of it under the database's write lock)
_LINKED_BLOB = Prepared(_LINKED.where(repository_blobs.c.digest == sa.bindparam("digest")))
_CHILD_MANIFEST = Prepared(_CHILDREN.where(manifests.c.digest == sa.bindparam("digest")))
ONE_BY_ONE = 32
"""Up to this many distinct references of a kind, SQLite looks each up on its own (`_LINKED_BLOB`); more go in one
IN query."""

# A push uses what garbage collection marked as candidates again: the manifest itself (pushed again or tagged), its
# children, its subject, its blobs' links. Before the references are checked, so a row is locked once, for writing.
# One key per execution (executemany, in sorted order): no expanding IN, whose SQL text is built again every call.
_CLEAR_MANIFEST_MARK = Prepared(
    manifests.update()
    .where(
        manifests.c.repository_id == sa.bindparam("in_repository"),
        manifests.c.digest == sa.bindparam("marked_digest"),
        manifests.c.gc_candidate_since.is_not(None),
    )
    .values(gc_candidate_since=None)
)
_CLEAR_LINK_MARK = Prepared(
    repository_blobs.update()
    .where(
        repository_blobs.c.repository_id == sa.bindparam("in_repository"),
        repository_blobs.c.digest == sa.bindparam("marked_digest"),
        repository_blobs.c.gc_candidate_since.is_not(None),
    )
    .values(gc_candidate_since=None)
)


def _annotations(stored: str | None) -> dict[str, str] | None:
    return json.loads(stored) if stored else None


def stored_manifest(conn: sa.Connection, params: dict[str, str]) -> StoredManifest | None:
    """`ManifestQueries.manifest` in the caller's connection (also run by `MetadataStore.blob_or_manifest`)."""
    row = _MANIFEST.run(conn, params).first()
    return StoredManifest(row.media_type, bytes(row.content)) if row else None


class ManifestQueries(StoreBase):
    def manifest(self, repository: str, digest: Digest) -> StoredManifest | None:
        params = {"repository": repository, "digest": str(digest)}
        return self._read(lambda conn: stored_manifest(conn, params))

    def referrers(
        self,
        repository: str,
        subject: Digest,
        artifact_type: str | None,
        after: Digest | None = None,
        limit: int | None = None,
    ) -> list[Referrer]:
        """In digest order, from the first after `after`: the API's pages resume there whatever was pushed or
        deleted between them."""
        if artifact_type is not None and not matchable(artifact_type):
            return []
        query = (
            sa.select(
                manifests.c.media_type,
                manifests.c.digest,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .select_from(manifests.join(repositories))
            .where(repositories.c.name == repository, manifests.c.subject_digest == str(subject))
            .order_by(manifests.c.digest)
            .limit(limit)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        if after is not None:
            query = query.where(manifests.c.digest > str(after))
        rows = self._read(lambda conn: conn.execute(query).all())
        return [
            Referrer(r.media_type, stored_digest(r.digest), r.size, r.artifact_type, _annotations(r.annotations))
            for r in rows
        ]

    def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        tag_names: Sequence[str] = (),
        events: Sequence[EventRecord] = (),
        check_references: bool = True,
    ) -> None:
        """Store the manifest (and point `tag_names` at it) after checking its references in the same
        transaction, which also writes `events`. A pull-through cache stores what its upstream verified without
        the check (`check_references=False`): its blobs and children are fetched when they are asked for."""

        def put(conn: sa.Connection) -> None:
            repo_id, manifest_id, now = self._store_manifest(conn, repository, manifest, check_references)
            # one order for every transaction: two pushes naming the same tags in other orders would deadlock
            for tag in sorted(set(tag_names)):
                params = {"repository_id": repo_id, "tag": tag, "manifest_id": manifest_id, "now": now}
                _UPSERT_TAG.run(conn, params)
            self._insert_events(conn, events)

        self._write(put)

    def import_manifest(self, repository: str, manifest: Manifest, tag_names: Sequence[str]) -> list[str]:
        """`put_manifest` for an import, which never moves a tag this registry has: each of `tag_names` is set only
        if the repository has no such tag when this transaction writes it (a push may have set one since the
        import read the tags). Returns the tags left as they were."""

        def put(conn: sa.Connection) -> list[str]:
            repo_id, manifest_id, now = self._store_manifest(conn, repository, manifest, True)
            kept = []
            for tag in sorted(set(tag_names)):
                params = {"repository_id": repo_id, "tag": tag, "manifest_id": manifest_id, "now": now}
                if _INSERT_TAG.run(conn, params).first() is None:
                    kept.append(tag)
            return kept

        return self._write(put)

    def _store_manifest(
        self, conn: sa.Connection, repository: str, manifest: Manifest, check_references: bool
    ) -> tuple[int, int, float]:
        """The repository's id, the manifest's id and the time, the manifest stored (references checked unless
        told not to) unless it is there already."""
        now = time.time()
        repo_id = self._repository_id(conn, repository, now)
        self._clear_marks(conn, repo_id, manifest)
        if check_references:
            self._check_references(conn, repo_id, manifest)
        return repo_id, self._insert_manifest(conn, repo_id, manifest, now), now

    def _insert_manifest(self, conn: sa.Connection, repo_id: int, manifest: Manifest, now: float) -> int:
        """The manifest's id, inserting it and its references unless it is there already."""
        digest = str(manifest.digest)
        # looked up first: a manifest tagged again is there, and the look-up costs a seventh of the INSERT that
        # would find it (measured on SQLite: 3 against 20 µs, every parameter bound and the conflict resolved)
        found: int | None = _MANIFEST_ID.run(conn, {"repository_id": repo_id, "digest": digest}).scalar()
        if found is not None:
            return found
        # ON CONFLICT: a client pushing the same manifest concurrently (PostgreSQL, READ COMMITTED)
        params = {
            "repository_id": repo_id,
            "digest": digest,
            "media_type": manifest.media_type,
            "content": manifest.raw,
            "size": len(manifest.raw),
            "subject_digest": str(manifest.subject.digest) if manifest.subject else None,
            "artifact_type": manifest.artifact_type,
            "annotations": json.dumps(manifest.annotations) if manifest.annotations else None,
            "now": now,
        }
        manifest_id: int | None = _INSERT_MANIFEST.run(conn, params).scalar()
        if manifest_id is None:
            existing: int = _MANIFEST_ID.run(conn, params).scalar_one()
            return existing
        refs = {(str(d.digest), "blob") for d in manifest.blobs}
        refs |= {(str(d.digest), "foreign") for d in manifest.foreign}
        refs |= {(str(d.digest), "manifest") for d in manifest.children}
        if refs:
            _INSERT_REFERENCES.run(
                conn, [{"manifest_id": manifest_id, "digest": d, "kind": k} for d, k in sorted(refs)]
            )
        return manifest_id

    def _clear_marks(self, conn: sa.Connection, repo_id: int, manifest: Manifest) -> None:
        """Save what this push uses from garbage collection (see `docs/gc.md`); no-ops unless something is marked."""
        used = {str(manifest.digest)} | {str(d.digest) for d in manifest.children}
        if manifest.subject is not None:
            used.add(str(manifest.subject.digest))
        _CLEAR_MANIFEST_MARK.run(conn, [{"in_repository": repo_id, "marked_digest": d} for d in sorted(used)])
        if manifest.blobs:
            layers = sorted({str(d.digest) for d in manifest.blobs})
            _CLEAR_LINK_MARK.run(conn, [{"in_repository": repo_id, "marked_digest": d} for d in layers])

    def _check_references(self, conn: sa.Connection, repo_id: int, manifest: Manifest) -> None:
        """Raise BadReference unless every blob and child is in the repository with the size the manifest gives.

        Runs inside the write transaction and locks the rows it reads (FOR SHARE on PostgreSQL; SQLite's write
        transaction excludes every other writer), so a concurrent delete cannot remove them before the commit.
        """
        wanted = [("blob", d) for d in manifest.blobs] + [("manifest", d) for d in manifest.children]
        if not wanted:
            return
        found: dict[tuple[str, str], int] = {}
        # each query only when the manifest has such references (an image has no children, an index no blobs)
        for kind, statement, one, descriptors in (
            ("blob", _LINKED_BLOBS, _LINKED_BLOB, manifest.blobs),
            ("manifest", _CHILD_MANIFESTS, _CHILD_MANIFEST, manifest.children),
        ):
            if not descriptors:
                continue
            digests = sorted({str(d.digest) for d in descriptors})
            if self._dialect == "sqlite" and len(digests) <= ONE_BY_ONE:
                rows = [one.run(conn, {"repository_id": repo_id, "digest": digest}).first() for digest in digests]
            else:
                rows = list(conn.execute(statement, {"repository_id": repo_id, "digests": digests}))
            found |= {(kind, row.digest): row.size for row in rows if row is not None}
        for kind, descriptor in wanted:
            size = found.get((kind, str(descriptor.digest)))
            if size != descriptor.size:
                raise BadReference(kind, descriptor.digest, descriptor.size, size)

    def delete_manifest(
        self,
        repository: str,
        digest: Digest,
        events: Sequence[EventRecord] = (),
        tag_events: Callable[[Sequence[str]], Sequence[EventRecord]] | None = None,
    ) -> bool:
        """Delete the manifest with its tags and references, and write `events`, then `tag_events` of the names of
        the tags it deleted (as Distribution reports each tag a manifest's deletion removed); False (and no events)
        if the repository has no such manifest."""

        def delete(conn: sa.Connection) -> bool:
            # the manifest's row first, as a push that tags it locks it (`_MANIFEST_ID`) before its tag: both take
            # the manifest, then the tags, so they never wait on each other in a cycle (SQLite: one writer anyway)
            manifest_id = conn.execute(
                sa.select(manifests.c.id)
                .select_from(manifests.join(repositories))
                .where(repositories.c.name == repository, manifests.c.digest == str(digest))
                .with_for_update(of=manifests)
            ).scalar()
            if manifest_id is None:
                return False
            names: list[str] = []
            if tag_events is not None:
                names = list(conn.execute(sa.select(tags.c.name).where(tags.c.manifest_id == manifest_id)).scalars())
            conn.execute(tags.delete().where(tags.c.manifest_id == manifest_id))
            conn.execute(manifest_references.delete().where(manifest_references.c.manifest_id == manifest_id))
            conn.execute(manifests.delete().where(manifests.c.id == manifest_id))
            self._insert_events(conn, [*events, *(tag_events(sorted(names)) if names and tag_events else ())])
            return True

        return self._write(delete)
