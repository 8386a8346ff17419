"""The whole store at once, for maintenance (fsck, import): every blob and manifest page by page, references that
lead nowhere, the images a damaged blob breaks, and forgetting a blob that storage cannot serve.

The request path never runs these: they read whole tables, in pages so memory stays flat on large stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID, StoreBase, stored_digest
from .blobs import BLOB_BEING_DELETED, BLOB_SERVED
from .models import COLLECTION_LEASE
from .tables import blobs, leases, manifest_references, manifests, repositories, repository_blobs, tags

_IN_LIST = 500
"""Digests looked up in one IN list: bounded, whatever the store's size."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class ManifestBytes:
    id: int
    repository: str
    digest: Digest
    content: bytes


@dataclass(frozen=True, slots=True)
class DanglingReference:
    """A manifest naming a blob its repository does not serve, or a child manifest its repository lacks."""

    repository: str
    manifest: Digest
    kind: str
    """'blob' or 'manifest'."""
    digest: Digest


@dataclass(frozen=True, slots=True)
class Image:
    """A manifest as users name it: by its tags, or by digest when untagged."""

    repository: str
    digest: Digest
    tags: tuple[str, ...]

    def names(self) -> list[str]:
        if self.tags:
            return [f"{self.repository}:{tag} ({self.digest})" for tag in self.tags]
        return [f"{self.repository}@{self.digest}"]


@dataclass(frozen=True, slots=True)
class RepositoryContent:
    """What one repository holds already: an import writes only what is missing."""

    blobs: frozenset[str]
    manifests: frozenset[str]
    tags: dict[str, str]


_DANGLING_BLOBS = (
    sa.select(repositories.c.name, manifests.c.digest.label("manifest"), manifest_references.c.digest)
    .select_from(manifest_references.join(manifests).join(repositories))
    .where(
        manifest_references.c.kind == "blob",
        ~sa.exists().where(
            repository_blobs.c.repository_id == manifests.c.repository_id,
            repository_blobs.c.digest == manifest_references.c.digest,
        ),
    )
)
_children = manifests.alias("children")
_DANGLING_CHILDREN = (
    sa.select(repositories.c.name, manifests.c.digest.label("manifest"), manifest_references.c.digest)
    .select_from(manifest_references.join(manifests).join(repositories))
    .where(
        manifest_references.c.kind == "manifest",
        ~sa.exists().where(
            _children.c.repository_id == manifests.c.repository_id,
            _children.c.digest == manifest_references.c.digest,
        ),
    )
)


class InventoryQueries(StoreBase):
    def totals(self) -> tuple[int, int, int]:
        """Blobs, their bytes, and manifests: what a full check will go through."""

        def read(conn: sa.Connection) -> tuple[int, int, int]:
            count, size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(blobs.c.size), 0))).one()
            manifest_count = conn.execute(sa.select(sa.func.count()).select_from(manifests)).scalar_one()
            return int(count), int(size), int(manifest_count)

        return self._read(read)

    def blob_page(self, after: str | None, limit: int) -> list[StoredBlob]:
        """Blobs in digest order after `after` (keyset paging: each page is one index range scan), those the
        registry serves (`BLOB_SERVED`): the row of an upload a node was killed while publishing was reported
        missing, although no one could pull it and the client's retry stored it."""
        query = sa.select(blobs.c.digest, blobs.c.size).where(BLOB_SERVED).order_by(blobs.c.digest).limit(limit)
        if after is not None:
            query = query.where(blobs.c.digest > after)
        rows = self._read(lambda conn: conn.execute(query).all())
        return [StoredBlob(stored_digest(r.digest), r.size) for r in rows]

    def manifest_page(self, after: int, limit: int) -> list[ManifestBytes]:
        query = (
            sa.select(manifests.c.id, repositories.c.name, manifests.c.digest, manifests.c.content)
            .select_from(manifests.join(repositories))
            .where(manifests.c.id > after)
            .order_by(manifests.c.id)
            .limit(limit)
        )
        rows = self._read(lambda conn: conn.execute(query).all())
        return [ManifestBytes(r.id, r.name, stored_digest(r.digest), bytes(r.content)) for r in rows]

    def dangling_references(self) -> list[DanglingReference]:
        """References a pull would fail on: blobs not linked to the manifest's repository, children it lacks."""

        def read(conn: sa.Connection) -> list[DanglingReference]:
            found = []
            for kind, query in (("blob", _DANGLING_BLOBS), ("manifest", _DANGLING_CHILDREN)):
                for row in conn.execute(query):
                    found.append(
                        DanglingReference(row.name, stored_digest(row.manifest), kind, stored_digest(row.digest))
                    )
            return found

        return self._read(read)

    def images_using(self, digests: Iterable[Digest], manifests_of: Iterable[tuple[str, Digest]] = ()) -> list[Image]:
        """The manifests that reference any of the blobs `digests`, those named in `manifests_of` (repository,
        digest), and the indexes over all of them, with their tags: the images a damaged blob breaks."""
        wanted = sorted({str(d) for d in digests})
        named = sorted({(name, str(d)) for name, d in manifests_of})
        if not wanted and not named:
            return []
        columns = (manifests.c.id, repositories.c.name, manifests.c.repository_id, manifests.c.digest)

        def read(conn: sa.Connection) -> list[Image]:
            found: dict[int, tuple[str, int, str]] = {}  # manifest id -> (repository, repository id, digest)
            frontier = list(
                conn.execute(
                    sa.select(*columns)
                    .select_from(manifest_references.join(manifests).join(repositories))
                    .where(manifest_references.c.kind == "blob", manifest_references.c.digest.in_(wanted))
                )
            )
            if named:
                frontier += conn.execute(
                    sa.select(*columns)
                    .select_from(manifests.join(repositories))
                    .where(sa.tuple_(repositories.c.name, manifests.c.digest).in_(named))
                ).all()
            while frontier:
                new = [row for row in frontier if row.id not in found]
                for row in new:
                    found[row.id] = (row.name, row.repository_id, row.digest)
                if not new:
                    break
                # the indexes over what was found, in the same repository
                frontier = list(
                    conn.execute(
                        sa.select(*columns)
                        .select_from(manifest_references.join(manifests).join(repositories))
                        .where(
                            manifest_references.c.kind == "manifest",
                            sa.tuple_(manifests.c.repository_id, manifest_references.c.digest).in_(
                                [(row.repository_id, row.digest) for row in new]
                            ),
                        )
                    )
                )
            tag_rows = conn.execute(
                sa.select(tags.c.manifest_id, tags.c.name).where(tags.c.manifest_id.in_(list(found)))
            ).all()
            names: dict[int, list[str]] = {}
            for tag_row in tag_rows:
                names.setdefault(tag_row.manifest_id, []).append(tag_row.name)
            return sorted(
                (
                    Image(repository, stored_digest(digest), tuple(sorted(names.get(manifest_id, []))))
                    for manifest_id, (repository, _, digest) in found.items()
                ),
                key=lambda image: (image.repository, str(image.digest)),
            )

        return self._read(read)

    def forget_blob(self, digest: Digest) -> int:
        """Stop serving a blob anywhere: its repository links and its row go, in one transaction. Manifests
        naming it stay (a push of the blob makes them whole again); returns how many repositories linked it."""

        def forget(conn: sa.Connection) -> int:
            links = conn.execute(repository_blobs.delete().where(repository_blobs.c.digest == str(digest))).rowcount
            conn.execute(blobs.delete().where(blobs.c.digest == str(digest)))
            return int(links)

        return self._write(forget)

    def known_blobs(self, digests: Iterable[Digest]) -> dict[Digest, int]:
        """Which of `digests` are blobs the registry serves already (`BLOB_SERVED`), with their sizes. Not one a
        collection is deleting: an import that counted such a blob present linked it, and the collection then
        removed its file under the link (HEAD 200, GET 404, its uploads refused for good)."""
        query = sa.select(blobs.c.digest, blobs.c.size).where(BLOB_SERVED)
        return {stored_digest(r.digest): r.size for r in self._read(lambda conn: _rows_in(conn, query, digests))}

    def blobs_being_deleted(self, digests: Iterable[Digest]) -> set[Digest]:
        """Which of `digests` a garbage collection is deleting now (or died deleting): their files are going."""
        query = sa.select(blobs.c.digest).where(BLOB_BEING_DELETED)
        return {stored_digest(r.digest) for r in self._read(lambda conn: _rows_in(conn, query, digests))}

    def abandoned_deletions(self) -> list[Digest]:
        """Blobs marked as being deleted while no collection holds its lease: one died deleting them. Uploads of
        them are refused until a collection finishes them (every running registry process looks every few
        seconds)."""
        held = sa.exists().where(leases.c.name == COLLECTION_LEASE, leases.c.expires_at > time.time())
        query = sa.select(blobs.c.digest).where(BLOB_BEING_DELETED, ~held).order_by(blobs.c.digest)
        return [stored_digest(digest) for digest in self._read(lambda conn: conn.execute(query).scalars().all())]

    def repository_content(self, name: str) -> RepositoryContent:
        def read(conn: sa.Connection) -> RepositoryContent:
            repo_id = conn.execute(REPOSITORY_ID, {"repository": name}).scalar()
            if repo_id is None:
                return RepositoryContent(frozenset(), frozenset(), {})
            linked = conn.execute(
                sa.select(repository_blobs.c.digest).where(repository_blobs.c.repository_id == repo_id)
            ).scalars()
            stored = conn.execute(sa.select(manifests.c.digest).where(manifests.c.repository_id == repo_id)).scalars()
            tag_rows = conn.execute(
                sa.select(tags.c.name, manifests.c.digest)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                .where(tags.c.repository_id == repo_id)
            ).all()
            return RepositoryContent(frozenset(linked), frozenset(stored), {r.name: r.digest for r in tag_rows})

        return self._read(read)


def _rows_in(conn: sa.Connection, query: sa.Select[Any], digests: Iterable[Digest]) -> list[sa.Row[Any]]:
    """The rows of `query` (over `blobs`) for `digests`, looked up in bounded IN lists."""
    wanted = sorted({str(d) for d in digests})
    return [
        row
        for start in range(0, len(wanted), _IN_LIST)
        for row in conn.execute(query.where(blobs.c.digest.in_(wanted[start : start + _IN_LIST])))
    ]
