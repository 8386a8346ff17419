"""Blobs: which verified blobs exist, and which of them each repository may serve.

Garbage collection (the `gc` feature) marks links no manifest references and blobs no repository links as
candidates; everything here that uses a link or a blob again clears the mark or, for an upload about to publish a
blob, pins it (see `docs/gc.md`). A blob whose `deleting_since` is set is being deleted: nothing links it again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID_OF, StoreBase, per_dialect
from .models import EventRecord
from .prepared import Prepared
from .tables import blob_pins, blobs, manifest_references, manifests, repositories, repository_blobs

PIN_SECONDS = 3600.0
"""How long an upload's pin protects a blob if the upload never links it (its process died): far longer than
publishing and linking take, which is what the pin covers."""

_BLOB_ENTRY = Prepared(
    sa.select(blobs.c.size, repository_blobs.c.gc_candidate_since)
    .select_from(repository_blobs.join(repositories).join(blobs))
    .where(repositories.c.name == sa.bindparam("repository"), repository_blobs.c.digest == sa.bindparam("digest"))
)
BLOB_BEING_DELETED = blobs.c.deleting_since.is_not(None)
"""A blob row a collection marked for deletion (its file may be gone already); migration 0027 indexes just these."""
# A row an upload's pin inserted (`_HOLD_BLOB`) is there before the upload placed the bytes: until a link is written
# (after they were placed), a pinned blob counts as stored only if some repository links it already.
BLOB_SERVED = sa.and_(
    blobs.c.deleting_since.is_(None),
    sa.or_(
        sa.exists().where(repository_blobs.c.digest == blobs.c.digest),
        ~sa.exists().where(blob_pins.c.digest == blobs.c.digest),
    ),
)
"""A blob row the registry serves: not one a collection is deleting, nor the row an upload holds while it publishes
(pinned and linked nowhere yet: its bytes may not be at their path)."""
_KNOWN_BLOB_SIZE = sa.select(blobs.c.size).where(blobs.c.digest == sa.bindparam("digest"), BLOB_SERVED)
_NAMED_BY_A_MANIFEST = sa.exists(
    sa.select(1)
    .select_from(manifest_references.join(manifests, manifests.c.id == manifest_references.c.manifest_id))
    .where(
        manifest_references.c.digest == sa.bindparam("digest"),
        # not a layer with `urls` ("foreign"): upstreams take those without having them, so naming one proves nothing
        manifest_references.c.kind == "blob",
        manifests.c.repository_id == REPOSITORY_ID_OF,
    )
).select()
_CACHED = repositories.alias("cached")
_LINKED_IN_THE_CACHE = sa.exists(
    sa.select(1)
    .select_from(repository_blobs.join(_CACHED, _CACHED.c.id == repository_blobs.c.repository_id))
    .where(
        repository_blobs.c.digest == sa.bindparam("digest"),
        sa.func.substr(_CACHED.c.name, 1, sa.func.length(sa.bindparam("cache"))) == sa.bindparam("cache"),
    )
).select()
"""A repository whose names begin with `cache` (a pull-through cache's prefix and a slash; empty for a mirror) links
the blob: its bytes came from that upstream, or it confirmed having them."""
_UNLINK = repository_blobs.delete().where(
    repository_blobs.c.repository_id == REPOSITORY_ID_OF, repository_blobs.c.digest == sa.bindparam("digest")
)
_TOUCH_LINK = (
    repository_blobs.update()
    .where(
        repository_blobs.c.repository_id == REPOSITORY_ID_OF,
        repository_blobs.c.digest == sa.bindparam("link_digest"),
        repository_blobs.c.gc_candidate_since.is_not(None),
    )
    .values(gc_candidate_since=None)
)
# FOR SHARE on PostgreSQL: waits for a collector that locked the row to mark it, then sees the mark. The source's
# id is a subquery, not a join: PostgreSQL's generic plan of a prepared join could start from the digest's links and
# look up each one's repository by name, i.e. every repository linking a popular layer on every mount of it; with
# the id known first and both columns in either index (0022), any plan finds the one link.
_MOUNTABLE = Prepared(
    sa.select(blobs.c.size)
    .select_from(repository_blobs.join(blobs))
    .where(
        repository_blobs.c.repository_id
        == sa.select(repositories.c.id).where(repositories.c.name == sa.bindparam("source")).scalar_subquery(),
        repository_blobs.c.digest == sa.bindparam("digest"),
        blobs.c.deleting_since.is_(None),
    )
    .with_for_update(read=True, of=blobs)
)
# FOR SHARE on PostgreSQL, as `_MOUNTABLE`: a collector marking the row waits for the link, then finds it linked
_BLOB_ROW = Prepared(
    sa.select(blobs.c.deleting_since).where(blobs.c.digest == sa.bindparam("digest")).with_for_update(read=True)
)
# Insert the blob as a placeholder or lock the row that is there, unless it is being deleted: no row comes back then.
_HOLD_BLOB = Prepared(
    per_dialect(
        lambda insert: (
            (
                statement := insert(blobs).values(
                    digest=sa.bindparam("digest"), size=sa.bindparam("size"), created_at=sa.bindparam("now")
                )
            )
            .on_conflict_do_update(
                index_elements=["digest"],
                set_={"size": statement.excluded.size},
                where=blobs.c.deleting_since.is_(None),
            )
            .returning(blobs.c.digest)
        )
    )
)
_PIN = Prepared(
    per_dialect(
        lambda insert: (
            statement := insert(blob_pins).values(
                digest=sa.bindparam("digest"), token=sa.bindparam("token"), expires_at=sa.bindparam("expires_at")
            )
        ).on_conflict_do_update(index_elements=["digest", "token"], set_={"expires_at": statement.excluded.expires_at})
    )
)
UNPIN = Prepared(
    blob_pins.delete().where(blob_pins.c.digest == sa.bindparam("digest"), blob_pins.c.token == sa.bindparam("token"))
)


def hold_and_pin(conn: sa.Connection, digest: Digest, size: int, token: str) -> bool:
    """`BlobQueries.pin_blob` within the caller's transaction (also run by `UploadQueries.claim_upload_pinned`)."""
    now = time.time()
    params = {"digest": str(digest), "size": size, "now": now, "token": token, "expires_at": now + PIN_SECONDS}
    if _HOLD_BLOB.run(conn, params).first() is None:
        return False
    _PIN.run(conn, params)
    return True


def blob_entry(conn: sa.Connection, params: dict[str, str]) -> tuple[int, bool] | None:
    """`BlobQueries.blob_entry` in the caller's connection (also run by `MetadataStore.blob_or_manifest`)."""
    row = _BLOB_ENTRY.run(conn, params).first()
    return None if row is None else (row.size, row.gc_candidate_since is not None)


class BlobQueries(StoreBase):
    def blob_entry(self, repository: str, digest: Digest) -> tuple[int, bool] | None:
        """Size of a blob this repository may serve and whether garbage collection marked its link, or None."""
        params = {"repository": repository, "digest": str(digest)}
        return self._read(lambda conn: blob_entry(conn, params))

    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """Size of a blob this repository may serve, or None."""
        entry = self.blob_entry(repository, digest)
        return None if entry is None else entry[0]

    def known_blob_size(self, digest: Digest) -> int | None:
        """Size of a verified blob in storage, whatever repository links it: not one being deleted, nor one an
        upload is still publishing (pinned and linked nowhere yet: its bytes may not be at their path)."""
        size: int | None = self._scalar(_KNOWN_BLOB_SIZE, {"digest": str(digest)})
        return size

    def blob_sizes(self, repository: str, digest: Digest, cache: str) -> tuple[int | None, int | None, bool, bool]:
        """`blob_size`; only when that is None, `known_blob_size`, whether a manifest of `repository` names the
        blob as a config or layer, and whether a repository of the cache (names beginning with `cache`) links it:
        the pull-through cache's first look at a blob, in one hop to a database thread instead of several (a cold
        blob is fetched only after them)."""
        linked = self.blob_size(repository, digest)
        if linked is not None:
            return linked, None, False, True
        params = {"repository": repository, "digest": str(digest), "cache": cache}
        named = bool(self._scalar(_NAMED_BY_A_MANIFEST, params))
        size = self.known_blob_size(digest)
        cached = size is not None and bool(self._scalar(_LINKED_IN_THE_CACHE, params))
        return None, size, named, cached

    def link_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        events: Sequence[EventRecord] = (),
        *,
        recorded: bool = False,
    ) -> bool:
        """Link a verified blob into `repository` and write `events`; False, and nothing written, while garbage
        collection deletes the blob: its file may be gone already, and a link to a row being deleted kept it so for
        good (HEAD 200, GET 404, every upload of it refused). The row is checked in the linking transaction, locked
        on PostgreSQL as a mount locks its source's. `recorded`: the caller took the blob as stored from its row
        (a pull-through cache fill, a v1 tag's layers, an import that read no bytes), so a row gone since went with
        its file: False then too. Otherwise the caller verified the bytes in storage, and a missing row is made."""

        def link(conn: sa.Connection) -> bool:
            row = _BLOB_ROW.run(conn, {"digest": str(digest)}).first()
            if (row is None and recorded) or (row is not None and row.deleting_since is not None):
                return False
            now = time.time()
            repo_id = self._repository_id(conn, repository, now)
            if row is None:
                self._link(conn, repo_id, digest, size, now)
            else:
                self._link_recorded(conn, repo_id, digest, now)
            self._insert_events(conn, events)
            return True

        return self._write(link)

    def mount_blob(self, repository: str, digest: Digest, source: str, events: Sequence[EventRecord] = ()) -> bool:
        """Link a blob `source` serves into `repository` and write `events`, in one transaction; False (and no
        events) when `source` does not serve it (or garbage collection is deleting it)."""

        def mount(conn: sa.Connection) -> bool:
            size = _MOUNTABLE.run(conn, {"source": source, "digest": str(digest)}).scalar()
            if size is None:
                return False
            now = time.time()
            # the look-up found the blob's row, locked on PostgreSQL (SQLite's writers take turns): only the link
            self._link_recorded(conn, self._repository_id(conn, repository, now), digest, now)
            self._insert_events(conn, events)
            return True

        return self._write(mount)

    def unlink_blob(self, repository: str, digest: Digest, events: Sequence[EventRecord] = ()) -> bool:
        """Stop serving a blob from `repository` and write `events`; False (and no events) if it did not."""
        params = {"repository": repository, "digest": str(digest)}

        def unlink(conn: sa.Connection) -> bool:
            if conn.execute(_UNLINK, params).rowcount == 0:
                return False
            self._insert_events(conn, events)
            return True

        return self._write(unlink)

    def touch_link(self, repository: str, digest: Digest) -> None:
        """A client asked for a link garbage collection had marked (a HEAD before skipping an upload): it is in use,
        the grace period starts again when a later collection finds it unreferenced."""
        params = {"repository": repository, "link_digest": str(digest)}
        self._write(lambda conn: conn.execute(_TOUCH_LINK, params), durable=False)

    def pin_blob(self, digest: Digest, size: int, token: str) -> bool:
        """Keep garbage collection away from `digest` while an upload publishes and links it (`finish_upload`
        removes the pin); False while a collector deletes it (try again once that is done)."""

        return self._write(lambda conn: hold_and_pin(conn, digest, size, token), durable=False)

    def unpin_blob(self, digest: Digest, token: str) -> None:
        self._write(lambda conn: UNPIN.run(conn, {"digest": str(digest), "token": token}), durable=False)
