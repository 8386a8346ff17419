"""The queries of garbage collection: leases, candidate marks, and deletions that check again what they delete.

A collection marks what nothing uses (an untagged manifest no tag reaches, a link no manifest of its repository
references, a blob no repository links) with the time it found it so, clears the mark of whatever is in use again,
and deletes what has been marked for longer than the grace period. Every deletion locks its rows and checks the
same conditions again in its own transaction, so a push that uses a candidate meanwhile either commits first (and
the row stays) or finds it gone (and is refused cleanly). See `docs/gc.md`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .base import StoreBase, per_dialect
from .blobs import BLOB_BEING_DELETED
from .models import WRITER_LEASE_SECONDS, Upload
from .prepared import Prepared
from .tables import (
    blob_pins,
    blobs,
    leases,
    manifest_references,
    manifests,
    proxy_pulls,
    repositories,
    repository_blobs,
    tags,
    uploads,
    v1_images,
    v1_presented,
    v1_repositories,
    v1_repository_images,
    v1_tags,
)

# --- conditions ------------------------------------------------------------------------------------------------------


def _link_referenced(doomed: DryRun | None = None) -> sa.ColumnElement[bool]:
    """A manifest names the blob, or the blob was pulled through the cache within its window: a collection first
    forgets the pulls older than that (`expire_blob_pulls`), so a pull row left keeps a blob pulled by digest
    alone."""
    return sa.or_(_link_in_manifest(doomed), _LINK_PULLED)


def _link_in_manifest(doomed: DryRun | None = None) -> sa.Exists:
    """A manifest of the link's repository names the blob (config, layer, or a non-distributable layer pushed
    anyway); with `doomed`, one that a real run would not delete."""
    referencing = manifests.alias("referencing")
    conditions = [
        manifest_references.c.digest == repository_blobs.c.digest,
        # two comparisons, not IN: an IN list cannot run in an executemany (`_DELETE_LINK`)
        sa.or_(manifest_references.c.kind == "blob", manifest_references.c.kind == "foreign"),
        referencing.c.repository_id == repository_blobs.c.repository_id,
    ]
    if doomed is not None and doomed.delete_untagged:
        conditions.append(sa.not_(_manifest_doomed(referencing, doomed)))
    return sa.exists(
        sa.select(1)
        .select_from(manifest_references.join(referencing, referencing.c.id == manifest_references.c.manifest_id))
        .where(*conditions)
    )


def _blob_linked(
    doomed: DryRun | None = None, table: sa.FromClause = blobs, named: bool = True
) -> sa.ColumnElement[bool]:
    """A repository links the blob (with `doomed`, by a link a real run would not delete), a manifest names it as a
    config or layer (with `doomed`, one a real run would not delete), or it is the layer of a v1 image: v1 images
    belong to no repository, and their layers are served by image id.

    A manifest's blob whose link was deleted (`DELETE /v2/<name>/blobs/<digest>`) is no longer served there, but
    its bytes stay while the manifest lives, as Distribution's collector (which marks through manifests) keeps
    them: they were deleted, and the tagged image was broken for good where linking the blob again restores it.
    A foreign layer's digest keeps nothing: naming one takes no bytes. `named=False` leaves manifests out: for
    the end of a deletion already decided, which a cached manifest (stored without checking its references) naming
    the blob meanwhile must not stop half-way (its file gone, its row kept "being deleted" for good)."""
    conditions = [repository_blobs.c.digest == table.c.digest]
    if doomed is not None:
        conditions.append(sa.not_(_link_doomed(doomed)))
    linked = sa.exists(sa.select(1).where(*conditions))
    v1_layer = sa.exists(sa.select(1).where(v1_images.c.layer_digest == table.c.digest))
    if not named:
        return sa.or_(linked, v1_layer)
    naming = [manifest_references.c.digest == table.c.digest, manifest_references.c.kind == "blob"]
    if doomed is not None and doomed.delete_untagged:
        named_by = manifests.alias("named_by")
        naming += [named_by.c.id == manifest_references.c.manifest_id, sa.not_(_manifest_doomed(named_by, doomed))]
    return sa.or_(linked, sa.exists(sa.select(1).where(*naming)), v1_layer)


_LINK_PULLED = sa.exists(
    sa.select(1).where(
        proxy_pulls.c.repository_id == repository_blobs.c.repository_id,
        proxy_pulls.c.digest == repository_blobs.c.digest,
        proxy_pulls.c.kind == "blob",
    )
)
_LINK_REFERENCED = _link_referenced()
_BLOB_LINKED = _blob_linked()


def _delete_link(since: sa.ColumnElement[float]) -> Prepared:
    """One link by its key, if `since` (its candidate mark, or with no grace period its creation) is before the
    cutoff and it is unreferenced: run for a batch of keys at once (a key lookup each, where a list of pairs in one
    statement makes SQLite scan the table), as SQL text on SQLite (SQLAlchemy's processing of each row's parameters
    cost as much as the deletions)."""
    return Prepared(
        repository_blobs.delete().where(
            repository_blobs.c.repository_id == sa.bindparam("in_repository"),
            repository_blobs.c.digest == sa.bindparam("link_digest"),
            since <= sa.bindparam("cutoff"),
            sa.not_(_LINK_REFERENCED),
        )
    )


_DELETE_LINK = _delete_link(repository_blobs.c.gc_candidate_since)
_DELETE_UNREFERENCED_LINK = _delete_link(repository_blobs.c.created_at)
_UNMARK_LINKS = (
    repository_blobs.update()
    .where(repository_blobs.c.gc_candidate_since.is_not(None), _LINK_REFERENCED)
    .values(gc_candidate_since=None)
)


def _unreferenced_links() -> sa.CompoundSelect[Any]:
    """The keys of links no manifest of their repository names and no cache pull keeps, as a set difference: every
    link, less what manifests name, less what was pulled. The same as `not_(_LINK_REFERENCED)` for every link at
    once, in a third less CPU on SQLite, and linear in the references where a correlated look-up goes through every
    manifest naming a widely shared base layer for each of its links."""
    listed, referencing = repository_blobs.alias("listed"), manifests.alias("referencing")
    named = (
        sa.select(referencing.c.repository_id, manifest_references.c.digest)
        .select_from(manifest_references.join(referencing, referencing.c.id == manifest_references.c.manifest_id))
        .where(sa.or_(manifest_references.c.kind == "blob", manifest_references.c.kind == "foreign"))
    )
    pulled = sa.select(proxy_pulls.c.repository_id, proxy_pulls.c.digest).where(proxy_pulls.c.kind == "blob")
    return sa.except_(sa.select(listed.c.repository_id, listed.c.digest), named, pulled)


_LINK_KEY = sa.tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest)
_UNREFERENCED_LINKS = _unreferenced_links()
_unlinked = blobs.alias("unlinked")
_UNLINKED_DIGESTS = sa.select(_unlinked.c.digest).where(sa.not_(_blob_linked(table=_unlinked)))
"""Digests no repository links. Only the digest is read, so SQLite walks the blobs' digest index, and each look-up
into the links' digest index lands next to the one before; walking the table instead, in the order rows were
inserted (random digests), sent every look-up elsewhere and took three times the CPU."""
_ANY_BEING_DELETED = sa.select(blobs.c.digest).where(BLOB_BEING_DELETED).limit(1)
_LEASE_READ = sa.select(leases.c.holder_process, leases.c.expires_at).where(leases.c.name == sa.bindparam("lease"))
_END_BLOB_DELETION = Prepared(
    blobs.delete().where(
        blobs.c.digest == sa.bindparam("doomed_digest"),
        BLOB_BEING_DELETED,
        sa.not_(_blob_linked(named=False)),
    )
)
"""One blob's row by its key, if being deleted and (as it must be) unlinked: run for a batch at once, half the
CPU of one statement with a list of digests."""


def _blob_pinned(table: sa.FromClause = blobs) -> sa.Exists:
    """An upload is publishing and linking the blob (`BlobQueries.pin_blob`)."""
    return sa.exists(
        sa.select(1).where(blob_pins.c.digest == table.c.digest, blob_pins.c.expires_at > sa.bindparam("now"))
    )


_BLOB_PINNED = _blob_pinned()
_UNMARK_BLOBS = (
    blobs.update().where(blobs.c.gc_candidate_since.is_not(None), _BLOB_LINKED).values(gc_candidate_since=None)
)


def _next_unlinked() -> sa.Select[Any]:
    """The next `limit` digests after `after`, in key order, of blobs no repository links. Only the digest is read:
    SQLite walks the blobs' digest index from `after` on, each look-up into the links' digest index next to the one
    before (as `_UNLINKED_DIGESTS`), and each batch continues where the one before stopped. The other conditions
    need the row, and are checked on the batch alone (`begin_unlinked_blob_deletion`): here, on every row walked,
    they took twice the CPU of the rest of the blobs' deletion."""
    table = blobs.alias("next_unlinked")
    return (
        sa.select(table.c.digest)
        .where(table.c.digest > sa.bindparam("after"), sa.not_(_blob_linked(table=table)))
        .order_by(table.c.digest)
        .limit(sa.bindparam("limit"))
    )


_NEXT_UNLINKED = _next_unlinked()
_NEXT_UNLINKED_LOCKED = _NEXT_UNLINKED.with_for_update()


def _repository_in_use() -> sa.ColumnElement[bool]:
    """The repository holds something: a tag, a manifest, a blob link, an upload session (which names it), or v1
    content (images, tags, properties). Pull rows of the cache only describe content, and go with it."""
    held_by_id = [
        sa.exists(sa.select(1).where(table.c.repository_id == repositories.c.id))
        for table in (tags, manifests, repository_blobs, v1_repository_images, v1_tags, v1_repositories)
    ]
    session = sa.exists(sa.select(1).where(uploads.c.repository == repositories.c.name))
    return sa.or_(*held_by_id, session)


_REPOSITORY_IN_USE = _repository_in_use()


def _live_manifests() -> sa.CTE:
    """The ids of manifests a tag reaches: tagged ones, an index's children, and in both directions between a
    referrer and its subject (a signature lives while its image does, and keeps it alive while it is tagged)."""
    parent, child = manifests.alias("parent"), manifests.alias("child")
    children = sa.select(parent.c.id.label("source"), child.c.id.label("target")).select_from(
        parent.join(manifest_references, manifest_references.c.manifest_id == parent.c.id).join(
            child,
            sa.and_(
                child.c.repository_id == parent.c.repository_id,
                child.c.digest == manifest_references.c.digest,
                manifest_references.c.kind == "manifest",
            ),
        )
    )
    referrer, subject = manifests.alias("referrer"), manifests.alias("subject")
    subject_join = referrer.join(
        subject,
        sa.and_(subject.c.repository_id == referrer.c.repository_id, subject.c.digest == referrer.c.subject_digest),
    )
    to_subject = sa.select(referrer.c.id.label("source"), subject.c.id.label("target")).select_from(subject_join)
    to_referrer = sa.select(subject.c.id.label("source"), referrer.c.id.label("target")).select_from(subject_join)
    edges = sa.union_all(children, to_subject, to_referrer).subquery("edges")
    live = sa.select(tags.c.manifest_id.label("id")).cte("live", recursive=True)
    return live.union(sa.select(edges.c.target).select_from(edges.join(live, edges.c.source == live.c.id)))


_LIVE = _live_manifests()
"""One CTE object for every statement: a statement that names it twice (a dry run's doomed manifests, through links
and through blobs) renders it once, where two objects of the same name do not compile."""


def _unreachable(table: sa.FromClause = manifests) -> sa.ColumnElement[bool]:
    return table.c.id.not_in(sa.select(_LIVE.c.id))


def _in_scope(prefix: str) -> sa.ColumnElement[bool]:
    """Repositories under `prefix/`; all of them for the empty prefix (a mirror)."""
    return repositories.c.name.startswith(prefix + "/", autoescape=True) if prefix else sa.true()


def _expired_manifests(prefix: str, cutoff: float) -> sa.Select[Any]:
    """Manifests of repositories under `prefix` last pulled (or, never pulled, cached) before `cutoff`."""
    last_pull = sa.func.coalesce(proxy_pulls.c.pulled_at, manifests.c.created_at)
    return (
        sa.select(manifests.c.id)
        .select_from(
            manifests.join(repositories, repositories.c.id == manifests.c.repository_id).outerjoin(
                proxy_pulls,
                sa.and_(
                    proxy_pulls.c.repository_id == manifests.c.repository_id,
                    proxy_pulls.c.digest == manifests.c.digest,
                ),
            )
        )
        .where(_in_scope(prefix), last_pull < cutoff)
    )


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a real run would delete, for a dry run's conditions: it follows the cascade (an untagged manifest's
    links, a deleted link's blob) without deleting anything."""

    cutoff: float
    include_unmarked: bool
    delete_untagged: bool


def _manifest_doomed(table: sa.FromClause, doomed: DryRun) -> sa.ColumnElement[bool]:
    return sa.and_(
        _marked(table.c.gc_candidate_since, doomed.cutoff, doomed.include_unmarked),
        table.c.created_at <= doomed.cutoff,
        _unreachable(table),
    )


def _link_doomed(doomed: DryRun) -> sa.ColumnElement[bool]:
    return sa.and_(
        _marked(repository_blobs.c.gc_candidate_since, doomed.cutoff, doomed.include_unmarked),
        repository_blobs.c.created_at <= doomed.cutoff,
        sa.not_(_link_referenced(doomed)),
    )


# --- statements ------------------------------------------------------------------------------------------------------

_LEASE = (
    sa.select(leases.c.holder, leases.c.holder_process, leases.c.expires_at)
    .where(leases.c.name == sa.bindparam("lease"))
    .with_for_update()
)
_TAKE_LEASE = per_dialect(
    lambda insert: (
        insert(leases)
        .values(
            name=sa.bindparam("lease"),
            holder=sa.bindparam("who"),
            holder_process=sa.bindparam("process"),
            expires_at=sa.bindparam("until"),
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(leases.c.name)
    )
)
"""RETURNING says whether the row was inserted: psycopg's rowcount of this insert is not reliable (not positive for
a row inserted, so `garbage-collect` on PostgreSQL always thought another collection was running)."""
_RENEW_LEASE = (
    leases.update()
    .where(leases.c.name == sa.bindparam("lease"))
    .values(holder=sa.bindparam("who"), holder_process=sa.bindparam("process"), expires_at=sa.bindparam("until"))
)
_RELEASE_LEASE = (
    leases.update()
    .where(leases.c.name == sa.bindparam("lease"), leases.c.holder == sa.bindparam("who"))
    .values(expires_at=0.0)
)


def _marked(column: sa.ColumnElement[float], cutoff: float, include_unmarked: bool) -> sa.ColumnElement[bool]:
    """Marked before `cutoff`; with `include_unmarked`, also not marked yet (a dry run with no grace period,
    which counts what a real run would mark and delete at once)."""
    marked = column <= cutoff
    return sa.or_(marked, column.is_(None)) if include_unmarked else marked


def _unmark_blobs(conn: sa.Connection, now: float) -> None:
    conn.execute(blob_pins.delete().where(blob_pins.c.expires_at <= now))
    conn.execute(_UNMARK_BLOBS)


def _unreached_v1_images(conn: sa.Connection, forgotten: set[str] | None, abandoned_before: float | None) -> list[str]:
    """The v1 images nothing reaches once the presentations of the manifests `forgotten` are: presented images
    (complete, without the payload checksum every image pushed through v1 has: `store/v1._presented_as`) when
    `forgotten` is given (even empty), and images of v1 pushes begun before `abandoned_before` and never
    completed, when that is. Reached: the chain (ancestry) of every presentation left, v1 tag, image a v1 index
    lists, and every other image (one built on a presented or half-pushed image keeps its parents)."""
    presented = conn.execute(sa.select(v1_presented.c.manifest_digest, v1_presented.c.image_id)).all()
    roots = {top for digest, top in presented if top and (forgotten is None or digest not in forgotten)}
    roots.update(conn.execute(sa.select(v1_tags.c.image_id)).scalars())
    roots.update(conn.execute(sa.select(v1_repository_images.c.image_id)).scalars())
    ancestry: dict[str, str] = {}
    candidates: list[str] = []
    images = sa.select(
        v1_images.c.id, v1_images.c.ancestry, v1_images.c.complete, v1_images.c.checksum, v1_images.c.created_at
    )
    for image_id, chain, complete, checksum, created_at in conn.execute(images):
        ancestry[image_id] = chain
        shown = forgotten is not None and complete and checksum is None
        abandoned = abandoned_before is not None and not complete and created_at < abandoned_before
        if shown or abandoned:
            candidates.append(image_id)
        else:
            roots.add(image_id)
    kept: set[str] = set()
    for root in roots:
        kept.update(json.loads(ancestry[root]) if root in ancestry else (root,))
    return [image_id for image_id in candidates if image_id not in kept]


def _delete_where_in(conn: sa.Connection, column: sa.Column[str], values: Sequence[str]) -> None:
    """Delete the rows whose `column` is one of `values`, 500 to a statement (bound parameters have limits)."""
    for start in range(0, len(values), 500):
        conn.execute(sa.delete(column.table).where(column.in_(values[start : start + 500])))


class LeaseLost(Exception):
    """Another process took the lease (this one stalled past its expiry): stop before deleting anything more."""


class CollectionQueries(StoreBase):
    """Only the commit that marks blobs as being deleted waits for the disk: their files are deleted after it. The
    other writes of a collection may be lost to a power cut (the next collection does them again), and that durable
    commit carries every earlier one along, as SQLite's WAL and PostgreSQL's log are written in order."""

    # --- leases: one collector at a time, across processes and nodes ------------------------------------------
    def acquire_lease(
        self,
        name: str,
        holder: str,
        seconds: float,
        process: str | None = None,
        holder_dead: Callable[[str | None], bool] | None = None,
    ) -> bool:
        """Take or renew the lease `name` for `seconds`; False while another holder's lease runs, unless
        `holder_dead` says the process it recorded (`process` of the one that took it) is dead: a collector
        killed on this host is replaced at once, not after its lease (uploads of the blobs it was deleting wait
        for one to finish them)."""

        def take(conn: sa.Connection) -> bool:
            now = time.time()
            params = {"lease": name, "who": holder, "until": now + seconds, "process": process}
            row = conn.execute(_LEASE, params).first()
            if row is None:
                return conn.execute(_TAKE_LEASE[self._dialect], params).first() is not None
            alive = holder_dead is None or not holder_dead(row.holder_process)
            if row.holder != holder and row.expires_at > now and alive:
                return False
            conn.execute(_RENEW_LEASE, params)
            return True

        return self._write(take)

    def release_lease(self, name: str, holder: str) -> None:
        self._write(lambda conn: conn.execute(_RELEASE_LEASE, {"lease": name, "who": holder}), durable=False)

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds the lease `name` until when, if anyone does now."""
        query = sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
        row = self._read(lambda conn: conn.execute(query).first())
        return (row.holder, row.expires_at) if row is not None and row.expires_at > time.time() else None

    # --- what there is ----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows of each kind a collection looks at (its summary's "scanned")."""

        def count(conn: sa.Connection) -> dict[str, int]:
            return {
                name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                for name, table in (
                    ("manifests", manifests),
                    ("links", repository_blobs),
                    ("blobs", blobs),
                    ("uploads", uploads),
                    ("repositories", repositories),
                )
            }

        return self._read(count)

    # --- v1 presentations of manifests no repository holds any more ---------------------------------------------
    def forget_v1_presentations(self, dry_run: bool) -> int:
        """Forget how deleted manifests were presented to v1 clients (`v1/presented`) and delete the presented
        images nothing reaches any more; how many images went (or would). A presented image names its layer, and
        every blob a v1 image names is kept (`_blob_linked`: v1 images belong to no repository), so without this a
        v2 image a v1 client had once listed kept its layers for ever after its deletion.

        Which manifests are gone is read first, outside the write transaction (a scan of every manifest: it must
        not hold the write lock); one pushed again meanwhile loses its presentation, which is made again on sight.
        A dry run reads only, and counts neither the presentations of manifests the real run deletes with
        `--delete-untagged` nor the layers the images it counts would free (see docs/gc.md)."""

        def gone(conn: sa.Connection) -> list[str] | None:
            presented = conn.execute(sa.select(v1_presented.c.manifest_digest)).scalars().all()
            if not presented:
                return None  # nothing was ever presented: the usual case, one look-up and no write transaction
            held = set(conn.execute(sa.select(manifests.c.digest).distinct()).scalars())
            return [digest for digest in presented if digest not in held]

        def forget(conn: sa.Connection) -> int:
            if not dry_run:
                self._lock_v1(conn)
            dead = _unreached_v1_images(conn, set(stale), None)
            if not dry_run:
                _delete_where_in(conn, v1_presented.c.manifest_digest, stale)
                _delete_where_in(conn, v1_images.c.id, dead)
            return len(dead)

        found = self._read(gone)
        if found is None:
            return 0
        stale: list[str] = found
        return self._read(forget) if dry_run else self._write(forget, durable=False)

    def expire_v1_pushes(self, begun_before: float, dry_run: bool) -> int:
        """Delete the images of v1 pushes begun before `begun_before` and never completed (an engine that died
        mid-push: no checksum came), unless something reaches them; how many went (or would). Their layers were
        kept for ever, as every v1 image's are; an upload session as old is purged with its data."""

        def expire(conn: sa.Connection) -> int:
            abandoned = sa.select(v1_images.c.id).where(
                v1_images.c.complete.is_(False), v1_images.c.created_at < begun_before
            )
            if conn.execute(abandoned.limit(1)).first() is None:
                return 0
            if not dry_run:
                self._lock_v1(conn)
            dead = _unreached_v1_images(conn, None, begun_before)
            if not dry_run:
                _delete_where_in(conn, v1_images.c.id, dead)
            return len(dead)

        return self._read(expire) if dry_run else self._write(expire, durable=False)

    def _lock_v1(self, conn: sa.Connection) -> None:
        """On PostgreSQL, keep every v1 request out of the v1 tables until the transaction ends, readers too: a
        presentation or push reads what its chain shares before it writes, and a lock that blocked only writes let
        it write on what it had read before this transaction deleted it (a chain recorded without its base image, a
        child without its parent). `v1_images` first, the table v1 writes touch first (another order deadlocked
        with a presentation). v1 data is small and v1 traffic rare; v2 requests never touch these tables. SQLite's
        write transaction keeps every other writer out already, and its writers read inside their own."""
        if self._dialect == "postgresql":
            conn.execute(
                sa.text("LOCK TABLE v1_images, v1_presented, v1_tags, v1_repository_images IN ACCESS EXCLUSIVE MODE")
            )

    # --- cached content not pulled within its window (the pull-through cache) ---------------------------------
    def expired_cached_manifests(self, prefix: str, cutoff: float) -> list[int]:
        """Ids of the manifests under `prefix` ("": every repository) not pulled since `cutoff`."""
        query = _expired_manifests(prefix, cutoff).order_by(manifests.c.id)
        return self._read(lambda conn: list(conn.execute(query).scalars()))

    def expire_cached_manifests(self, prefix: str, ids: Sequence[int], cutoff: float) -> int:
        """Drop the tags of those of `ids` still not pulled since `cutoff`, then delete those of them no tag
        reaches any more (an index or a referrer still pulled keeps its children or subject), with their references
        and pull rows. How many manifests went."""

        def expire(conn: sa.Connection) -> int:
            locked = sa.select(manifests.c.id).where(manifests.c.id.in_(list(ids))).with_for_update()
            if not conn.execute(locked).all():
                return 0
            expired = list(
                conn.execute(_expired_manifests(prefix, cutoff).where(manifests.c.id.in_(list(ids)))).scalars()
            )
            if not expired:
                return 0
            conn.execute(tags.delete().where(tags.c.manifest_id.in_(expired)))
            doomed = conn.execute(
                sa.select(manifests.c.id, manifests.c.repository_id, manifests.c.digest).where(
                    manifests.c.id.in_(expired), _unreachable()
                )
            ).all()
            if not doomed:
                return 0
            ids_doomed = [row.id for row in doomed]
            pulled = sa.tuple_(proxy_pulls.c.repository_id, proxy_pulls.c.digest)
            conn.execute(proxy_pulls.delete().where(pulled.in_([(row.repository_id, row.digest) for row in doomed])))
            conn.execute(manifest_references.delete().where(manifest_references.c.manifest_id.in_(ids_doomed)))
            conn.execute(manifests.delete().where(manifests.c.id.in_(ids_doomed)))
            return len(doomed)

        return self._write(expire, durable=False)

    def expire_blob_pulls(self, prefix: str, cutoff: float, dry_run: bool) -> int:
        """Forget the blob pulls under `prefix` older than `cutoff`, and delete the links of those that no manifest
        of their repository references (blobs pulled by digest alone); how many links went (or would)."""
        expired = sa.and_(
            proxy_pulls.c.kind == "blob",
            proxy_pulls.c.pulled_at < cutoff,
            proxy_pulls.c.repository_id.in_(sa.select(repositories.c.id).where(_in_scope(prefix))),
        )
        pulled = sa.exists(
            sa.select(1).where(
                proxy_pulls.c.repository_id == repository_blobs.c.repository_id,
                proxy_pulls.c.digest == repository_blobs.c.digest,
                expired,
            )
        )
        unreferenced = sa.not_(_link_in_manifest())
        if dry_run:
            query = sa.select(sa.func.count()).select_from(repository_blobs).where(pulled, unreferenced)
            return self._read(lambda conn: int(conn.execute(query).scalar_one()))

        def expire(conn: sa.Connection) -> int:
            links = [
                (row.repository_id, row.digest)
                for row in conn.execute(
                    sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest)
                    .where(pulled)
                    .with_for_update()
                )
            ]
            conn.execute(proxy_pulls.delete().where(expired))
            if not links:
                return 0
            chosen = sa.tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest).in_(links)
            return int(conn.execute(repository_blobs.delete().where(chosen, unreferenced)).rowcount)

        return self._write(expire, durable=False)

    def forget_pulls_outside(self, prefixes: Sequence[str]) -> None:
        """Pull rows of repositories no proxy serves any more (the configuration changed): they must not keep
        links of what is now a local repository."""
        served = sa.or_(sa.false(), *(_in_scope(prefix) for prefix in prefixes))
        outside = proxy_pulls.c.repository_id.in_(sa.select(repositories.c.id).where(sa.not_(served)))
        self._write(lambda conn: conn.execute(proxy_pulls.delete().where(outside)), durable=False)

    # --- untagged manifests ---------------------------------------------------------------------------------
    def mark_manifests(self, now: float) -> None:
        """Mark manifests no tag reaches, unmark those one reaches again."""

        def mark(conn: sa.Connection) -> None:
            unreachable = _unreachable()
            conn.execute(
                manifests.update()
                .where(manifests.c.gc_candidate_since.is_not(None), sa.not_(unreachable))
                .values(gc_candidate_since=None)
            )
            conn.execute(
                manifests.update()
                .where(manifests.c.gc_candidate_since.is_(None), unreachable)
                .values(gc_candidate_since=now)
            )

        self._write(mark, durable=False)

    def manifest_candidates(self, cutoff: float, dry_run: DryRun | None = None) -> list[int]:
        """Ids of unreachable manifests marked before `cutoff`; for a dry run, those a real run would delete."""
        doomed = dry_run or DryRun(cutoff, include_unmarked=False, delete_untagged=True)
        query = sa.select(manifests.c.id).where(_manifest_doomed(manifests, doomed)).order_by(manifests.c.id)
        return self._read(lambda conn: list(conn.execute(query).scalars()))

    def delete_manifests(self, ids: Sequence[int], cutoff: float) -> int:
        """Delete those of `ids` still unreachable and marked before `cutoff`, with their references; how many."""

        def delete(conn: sa.Connection) -> int:
            locked = list(
                conn.execute(sa.select(manifests.c.id).where(manifests.c.id.in_(ids)).with_for_update()).scalars()
            )
            if not locked:
                return 0
            doomed = list(
                conn.execute(
                    sa.select(manifests.c.id).where(
                        manifests.c.id.in_(locked),
                        manifests.c.gc_candidate_since <= cutoff,
                        manifests.c.created_at <= cutoff,
                        _unreachable(),
                    )
                ).scalars()
            )
            if doomed:
                conn.execute(manifest_references.delete().where(manifest_references.c.manifest_id.in_(doomed)))
                conn.execute(manifests.delete().where(manifests.c.id.in_(doomed)))
            return len(doomed)

        return self._write(delete, durable=False)

    # --- links --------------------------------------------------------------------------------------------------
    def mark_links(self, now: float) -> None:
        """Mark links no manifest of their repository references, unmark those one references again."""

        def mark(conn: sa.Connection) -> None:
            conn.execute(_UNMARK_LINKS)
            conn.execute(
                repository_blobs.update()
                .where(repository_blobs.c.gc_candidate_since.is_(None), _LINK_KEY.in_(_UNREFERENCED_LINKS))
                .values(gc_candidate_since=now)
            )

        self._write(mark, durable=False)

    def link_candidates(self, cutoff: float, dry_run: DryRun | None = None) -> list[tuple[int, str]]:
        """(repository id, digest) of links marked before `cutoff`; for a dry run, those a real run would delete.

        Run right after `mark_links`, which unmarked every link referenced again: whether each still is unreferenced
        is checked where it counts, by `delete_links` (checking it here as well was a fifth of this phase's reads)."""
        if dry_run is not None:
            condition = _link_doomed(dry_run)
        else:
            condition = sa.and_(
                repository_blobs.c.gc_candidate_since <= cutoff, repository_blobs.c.created_at <= cutoff
            )
        # in key order, so each batch of deletions touches a run of the table's pages rather than all of them
        query = (
            sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest)
            .where(condition)
            .order_by(repository_blobs.c.repository_id, repository_blobs.c.digest)
        )
        return self._read(lambda conn: [(repository, digest) for repository, digest in conn.execute(query).all()])

    def unmark_links(self) -> None:
        """Unmark the links referenced again (the first half of `mark_links`), for a collection with no grace period,
        which marks nothing (`unreferenced_links`): a mark left by an earlier collection with a grace period on a
        link in use would otherwise start a later one's grace period before the link's last use."""
        self._write(lambda conn: conn.execute(_UNMARK_LINKS), durable=False)

    def unreferenced_links(self) -> list[tuple[int, str]]:
        """(repository id, digest) of every link no manifest of its repository names and no cache pull keeps, in key
        order: with no grace period, the candidates of `delete_unreferenced_links` without marking them first (a mark
        written only to be read back in the same run: 9,900 row updates of a 100,000-row table, and the read)."""
        return sorted(
            self._read(
                lambda conn: [(repository, digest) for repository, digest in conn.execute(_UNREFERENCED_LINKS).all()]
            )
        )

    def delete_links(self, keys: Sequence[tuple[int, str]], cutoff: float) -> int:
        """Delete those of `keys` (repository id, digest) still unreferenced and marked before `cutoff`."""
        return self._delete_links(_DELETE_LINK, keys, cutoff)

    def delete_unreferenced_links(self, keys: Sequence[tuple[int, str]], cutoff: float) -> int:
        """With no grace period: delete those of `keys` unreferenced now and made before `cutoff` (the start of the
        collection), marked or not. The check runs in the deleting transaction, as `delete_links`' does: what a
        push, mount or upload committed before it keeps the link; one that comes after finds it gone."""
        return self._delete_links(_DELETE_UNREFERENCED_LINK, keys, cutoff)

    def _delete_links(self, statement: Prepared, keys: Sequence[tuple[int, str]], cutoff: float) -> int:
        rows = [{"in_repository": repository, "link_digest": digest, "cutoff": cutoff} for repository, digest in keys]

        def delete(conn: sa.Connection) -> int:
            if self._dialect == "postgresql":
                # lock first, check after: the deletes are new statements, which see what a push that held the rows
                # committed meanwhile (SQLite's write transaction already excludes every other writer)
                chosen = sa.tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest).in_(list(keys))
                conn.execute(sa.select(repository_blobs.c.digest).where(chosen).with_for_update()).all()
            return int(statement.run(conn, rows).rowcount)

        return self._write(delete, durable=False)

    # --- blobs --------------------------------------------------------------------------------------------------
    def mark_blobs(self, now: float) -> None:
        """Mark blobs no repository links, unmark those linked again; forget pins that expired."""

        def mark(conn: sa.Connection) -> None:
            _unmark_blobs(conn, now)
            conn.execute(
                blobs.update()
                .where(
                    blobs.c.gc_candidate_since.is_(None),
                    blobs.c.deleting_since.is_(None),
                    blobs.c.digest.in_(_UNLINKED_DIGESTS),
                )
                .values(gc_candidate_since=now)
            )

        self._write(mark, durable=False)

    def unmark_blobs(self, now: float) -> None:
        """Unmark the blobs linked again and forget pins that expired (`mark_blobs` without its marks), for a
        collection with no grace period (`begin_unlinked_blob_deletion`); see `unmark_links`."""
        self._write(lambda conn: _unmark_blobs(conn, now), durable=False)

    def blob_candidates(self, cutoff: float, dry_run: DryRun | None = None) -> list[tuple[str, int]]:
        """Digests and sizes of unlinked, unpinned blobs marked before `cutoff`; for a dry run, those a real run
        would delete."""
        if dry_run is not None:
            marked = _marked(blobs.c.gc_candidate_since, cutoff, dry_run.include_unmarked)
            linked = _blob_linked(dry_run)
        else:
            marked, linked = blobs.c.gc_candidate_since <= cutoff, _BLOB_LINKED
        query = sa.select(blobs.c.digest, blobs.c.size).where(
            marked,
            blobs.c.created_at <= cutoff,
            blobs.c.deleting_since.is_(None),
            sa.not_(linked),
            sa.not_(_BLOB_PINNED),
        )
        # sorted here, not by the database: ORDER BY made SQLite walk the whole digest index and look up every row
        return sorted(
            self._read(
                lambda conn: [(digest, size) for digest, size in conn.execute(query, {"now": time.time()}).all()]
            )
        )

    def begin_blob_deletion(self, digests: Sequence[str], cutoff: float) -> list[tuple[str, int]]:
        """Mark those of `digests` still unlinked, unpinned and marked before `cutoff` as being deleted: from this
        commit on nothing links them again (uploads wait, mounts refuse). Their digests and sizes.

        On PostgreSQL the rows are locked first and checked after, by a new statement that sees what a push holding
        them committed meanwhile (as `delete_links`). SQLite's write transaction already excludes every other
        writer, and there the lock was a second statement with the batch's 2,000-element `IN` list for nothing: a
        fifth of this call's CPU."""
        chosen = blobs.c.digest.in_(list(digests))

        def begin(conn: sa.Connection) -> list[tuple[str, int]]:
            if self._dialect == "postgresql":
                conn.execute(sa.select(blobs.c.digest).where(chosen).with_for_update()).all()
            now = time.time()
            rows = conn.execute(
                blobs.update()
                .where(
                    chosen,
                    blobs.c.deleting_since.is_(None),
                    blobs.c.gc_candidate_since <= cutoff,
                    sa.not_(_BLOB_LINKED),
                    sa.not_(_BLOB_PINNED),
                )
                .values(deleting_since=now)
                .returning(blobs.c.digest, blobs.c.size),
                {"now": now},
            )
            return [(digest, size) for digest, size in rows.all()]

        return self._write(begin)

    def begin_unlinked_blob_deletion(
        self, after: str, cutoff: float, limit: int
    ) -> tuple[list[tuple[str, int]], str | None]:
        """With no grace period: mark the next `limit` blobs after the digest `after` that are unlinked, unpinned and
        made before `cutoff` (the start of the collection) as being deleted, candidate marks or not, and return
        their digests and sizes, with the digest to continue after (None when no blob is left). What
        `blob_candidates` and `begin_blob_deletion` do with a grace period, as a look-up and an `UPDATE` per batch
        with no candidate mark written first, checked by the transaction that marks them (as there).

        On PostgreSQL the batch's rows are locked first, and the conditions checked again after by a new
        statement, which sees what a push holding them committed meanwhile (as `begin_blob_deletion`)."""
        params = {"after": after, "cutoff": cutoff, "limit": limit, "now": time.time()}

        def begin(conn: sa.Connection) -> tuple[list[tuple[str, int]], str | None]:
            postgresql = self._dialect == "postgresql"
            examined = list(conn.execute(_NEXT_UNLINKED_LOCKED if postgresql else _NEXT_UNLINKED, params).scalars())
            if not examined:
                return [], None
            conditions = [blobs.c.deleting_since.is_(None), blobs.c.created_at <= cutoff, sa.not_(_BLOB_PINNED)]
            if postgresql:  # SQLite's write transaction excludes every other writer: the look-up checked it already
                conditions.append(sa.not_(_BLOB_LINKED))
            rows = conn.execute(
                blobs.update()
                .where(blobs.c.digest.in_(examined), *conditions)
                .values(deleting_since=params["now"])
                .returning(blobs.c.digest, blobs.c.size),
                params,
            ).all()
            return [(digest, size) for digest, size in rows], examined[-1] if len(examined) == limit else None

        return self._write(begin)

    def end_blob_deletion(self, digests: Sequence[str]) -> None:
        """Remove the rows of blobs whose files are deleted."""
        rows = [{"doomed_digest": digest} for digest in digests]
        self._write(lambda conn: _END_BLOB_DELETION.run(conn, rows), durable=False)

    def deletions_abandoned(self, lease: str, holder_dead: Callable[[str | None], bool]) -> bool:
        """Whether blobs are marked as being deleted while no live collection holds `lease` (it died, or expired):
        two reads, the first of an index holding only such blobs, so every worker may ask every few seconds. While
        one collects, its own marks are not abandoned: asking then writes nothing, where taking the lease to find
        that out was a write transaction."""

        def read(conn: sa.Connection) -> bool:
            if conn.execute(_ANY_BEING_DELETED).first() is None:
                return False
            row = conn.execute(_LEASE_READ, {"lease": lease}).first()
            return row is None or row.expires_at <= time.time() or holder_dead(row.holder_process)

        return self._read(read)

    def blobs_being_deleted(self) -> list[tuple[str, int]]:
        """Blobs a collection began deleting and did not finish (it died): the next one finishes them."""
        query = sa.select(blobs.c.digest, blobs.c.size).where(BLOB_BEING_DELETED)
        return self._read(lambda conn: [(row.digest, row.size) for row in conn.execute(query)])

    # --- empty repositories -------------------------------------------------------------------------------------
    def mark_repositories(self, now: float) -> None:
        """Mark repositories that hold nothing, unmark those that hold something again."""

        def mark(conn: sa.Connection) -> None:
            conn.execute(
                repositories.update()
                .where(repositories.c.gc_candidate_since.is_not(None), _REPOSITORY_IN_USE)
                .values(gc_candidate_since=None)
            )
            conn.execute(
                repositories.update()
                .where(repositories.c.gc_candidate_since.is_(None), sa.not_(_REPOSITORY_IN_USE))
                .values(gc_candidate_since=now)
            )

        self._write(mark, durable=False)

    def repository_candidates(self, cutoff: float, dry_run: DryRun | None = None) -> list[int]:
        """Ids of empty repositories marked before `cutoff`; for a dry run, those empty now and marked before it
        (or not yet marked, with no grace period). A dry run does not follow the cascade here: a repository that
        the run's other deletions would empty is not counted."""
        marked = (
            _marked(repositories.c.gc_candidate_since, cutoff, dry_run.include_unmarked)
            if dry_run is not None
            else repositories.c.gc_candidate_since <= cutoff
        )
        query = (
            sa.select(repositories.c.id)
            .where(marked, repositories.c.created_at <= cutoff, sa.not_(_REPOSITORY_IN_USE))
            .order_by(repositories.c.id)
        )
        return self._read(lambda conn: list(conn.execute(query).scalars()))

    def delete_repositories(self, ids: Sequence[int], cutoff: float) -> int:
        """Delete those of `ids` still empty and marked before `cutoff`; how many.

        Lock first, check after (as `delete_links`): a push resolves its repository's row `FOR KEY SHARE`
        (`StoreBase._repository_id`), so either its transaction commits first and the check here, a later
        statement, sees what it added, or it finds the row gone and creates the repository again."""

        def delete(conn: sa.Connection) -> int:
            locked = list(
                conn.execute(
                    sa.select(repositories.c.id).where(repositories.c.id.in_(list(ids))).with_for_update()
                ).scalars()
            )
            if not locked:
                return 0
            statement = repositories.delete().where(
                repositories.c.id.in_(locked),
                repositories.c.gc_candidate_since <= cutoff,
                repositories.c.created_at <= cutoff,
                sa.not_(_REPOSITORY_IN_USE),
            )
            return int(conn.execute(statement).rowcount)

        return self._write(delete, durable=False)

    # --- upload sessions ----------------------------------------------------------------------------------------
    def expired_uploads(self, started_before: float, dry_run: bool) -> list[Upload]:
        """End the sessions begun before `started_before` that no live request writes to; the sessions ended."""
        now = time.time()
        idle = sa.or_(uploads.c.writer.is_(None), uploads.c.writer_since < now - WRITER_LEASE_SECONDS)
        condition = sa.and_(uploads.c.created_at < started_before, idle)
        columns = (uploads.c.id, uploads.c.repository, uploads.c.size)
        if dry_run:
            rows = self._read(lambda conn: conn.execute(sa.select(*columns).where(condition)).all())
        else:
            rows = self._write(lambda conn: conn.execute(uploads.delete().where(condition).returning(*columns)).all())
        return [Upload(row.id, row.repository, row.size) for row in rows]

    def upload_ids(self) -> set[str]:
        return self._read(lambda conn: set(conn.execute(sa.select(uploads.c.id)).scalars()))
