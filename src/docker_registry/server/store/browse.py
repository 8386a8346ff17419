"""Queries for browsing the store (the web UI): repositories with their tag count, last push and size, a page of a
repository's tags with their manifests, and the latest pushes. No API knowledge: the caller decides what to show.

Every query is bounded by a page: the aggregates run only for the names of one page, through the primary keys
(`tags`, `repository_blobs`) and the indexes of migration 0014 (`tags` by push time), so a page costs the same on
a registry of ten or ten thousand repositories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID_OF, StoreBase, like_pattern, matchable, sort_key_before_nul, stored_digest
from .tables import blobs, manifests, repositories, repository_blobs, tags

TagOrder = Literal["pushed", "name"]


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    tags: int
    last_push: float | None
    """When a tag was last pushed (moved) in the repository; None without tags."""
    size: int
    """The sum of the sizes of the distinct blobs the repository links (layers and configs)."""


@dataclass(frozen=True, slots=True)
class TagRecord:
    name: str
    pushed: float
    digest: Digest
    media_type: str
    content: bytes | None
    """None when larger than the page asked to read (`tag_page`'s `content_limit`)."""


@dataclass(frozen=True, slots=True)
class PushRecord:
    repository: str
    tag: str
    digest: Digest
    pushed: float


_TAG_COUNT = (
    sa.select(sa.func.count()).select_from(tags).where(tags.c.repository_id == repositories.c.id).scalar_subquery()
)
_LAST_PUSH = (
    sa.select(sa.func.max(tags.c.updated_at)).where(tags.c.repository_id == repositories.c.id).scalar_subquery()
)
_SIZE = (
    sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
    .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
    .where(repository_blobs.c.repository_id == repositories.c.id)
    .scalar_subquery()
)
_SUMMARIES = sa.select(repositories.c.name, _TAG_COUNT, _LAST_PUSH, _SIZE).where(
    repositories.c.name.in_(sa.bindparam("names", expanding=True))
)
_TAG_COLUMNS = (
    tags.c.name,
    tags.c.updated_at,
    manifests.c.digest,
    manifests.c.media_type,
    sa.case((manifests.c.size <= sa.bindparam("content_limit"), manifests.c.content), else_=sa.null()),
)
_TAGS_OF = tags.join(manifests, manifests.c.id == tags.c.manifest_id)
_TAG_TOTAL = sa.select(sa.func.count()).select_from(tags).where(tags.c.repository_id == REPOSITORY_ID_OF)
_RECENT = (
    sa.select(repositories.c.name, tags.c.name, manifests.c.digest, tags.c.updated_at)
    .select_from(_TAGS_OF.join(repositories, repositories.c.id == tags.c.repository_id))
    .order_by(tags.c.updated_at.desc())
    .limit(sa.bindparam("limit"))
)


class BrowseQueries(StoreBase):
    def repository_names(self, search: str | None, after: str | None, limit: int) -> list[str]:
        """Names containing `search` (a substring, any case on SQLite's ASCII, as typed on PostgreSQL), after
        `after`, sorted by bytes: keyset pages over the unique index of names."""
        name = self._bytewise(repositories.c.name)
        query = sa.select(repositories.c.name).order_by(name).limit(limit)
        if search and not matchable(search):
            return []
        if after:
            query = query.where(name > sort_key_before_nul(after))
        if search:
            query = query.where(repositories.c.name.ilike(like_pattern(search), escape="\\"))
        return self._read(lambda conn: list(conn.execute(query).scalars()))

    def repository_summaries(self, names: Sequence[str]) -> dict[str, RepositorySummary]:
        """Tag count, last push and size of the named repositories (one page of them)."""
        if not names:
            return {}
        rows = self._read(lambda conn: conn.execute(_SUMMARIES, {"names": list(names)}).all())
        return {row[0]: RepositorySummary(row[0], int(row[1]), row[2], int(row[3])) for row in rows}

    def tag_page(
        self, repository: str, order: TagOrder, offset: int, limit: int, content_limit: int
    ) -> tuple[int, list[TagRecord]] | None:
        """The repository's tag count and one page of its tags with their manifests (the bytes of those of at most
        `content_limit` bytes: fifty of 4 MiB each are not read for a list), newest push first or by name; None
        when the repository does not exist."""
        keys = (tags.c.updated_at.desc(), tags.c.name) if order == "pushed" else (self._bytewise(tags.c.name),)
        query = (
            sa.select(*_TAG_COLUMNS)
            .select_from(_TAGS_OF)
            .where(tags.c.repository_id == REPOSITORY_ID_OF)
            .order_by(*keys)
            .offset(offset)
            .limit(limit)
        )

        def read(conn: sa.Connection) -> tuple[int, list[TagRecord]] | None:
            params = {"repository": repository}
            if conn.execute(sa.select(REPOSITORY_ID_OF), params).scalar() is None:
                return None
            total = int(conn.execute(_TAG_TOTAL, params).scalar_one())
            rows = conn.execute(query, {**params, "content_limit": content_limit}).all()
            return total, [TagRecord(r[0], r[1], stored_digest(r[2]), r[3], r[4]) for r in rows]

        return self._read(read)

    def tags_of_manifest(self, repository: str, digest: Digest) -> list[str]:
        """The tags pointing at one manifest of the repository, sorted."""
        query = (
            sa.select(tags.c.name)
            .select_from(_TAGS_OF)
            .where(tags.c.repository_id == REPOSITORY_ID_OF, manifests.c.digest == sa.bindparam("digest"))
            .order_by(self._bytewise(tags.c.name))
        )
        params = {"repository": repository, "digest": str(digest)}
        return self._read(lambda conn: list(conn.execute(query, params).scalars()))

    def manifest_contents(
        self, repository: str, digests: Sequence[str], size_limit: int
    ) -> dict[str, tuple[str, bytes]]:
        """Media type and bytes of the named manifests of the repository (an index page's children) of at most
        `size_limit` bytes, one query."""
        if not digests:
            return {}
        query = sa.select(manifests.c.digest, manifests.c.media_type, manifests.c.content).where(
            manifests.c.repository_id == REPOSITORY_ID_OF,
            manifests.c.digest.in_(sa.bindparam("digests", expanding=True)),
            manifests.c.size <= sa.bindparam("size_limit"),
        )
        params = {"repository": repository, "digests": sorted(set(digests)), "size_limit": size_limit}
        rows = self._read(lambda conn: conn.execute(query, params).all())
        return {row[0]: (row[1], row[2]) for row in rows}

    def recent_pushes(self, limit: int) -> list[PushRecord]:
        """The latest tag pushes of the whole registry, newest first (the index on `tags.updated_at`)."""
        rows = self._read(lambda conn: conn.execute(_RECENT, {"limit": limit}).all())
        return [PushRecord(r[0], r[1], stored_digest(r[2]), r[3]) for r in rows]
