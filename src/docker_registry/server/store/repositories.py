"""Repositories and their tags: existence, the catalog, tag lists and tag targets."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID, REPOSITORY_ID_OF, StoreBase, sort_key_before_nul, stored_digest
from .models import EventRecord
from .tables import manifests, repositories, tags

_TAG_DIGEST = (
    sa.select(manifests.c.digest)
    .select_from(tags.join(repositories).join(manifests, manifests.c.id == tags.c.manifest_id))
    .where(repositories.c.name == sa.bindparam("repository"), tags.c.name == sa.bindparam("tag"))
)
_DELETE_TAG = tags.delete().where(tags.c.repository_id == REPOSITORY_ID_OF, tags.c.name == sa.bindparam("tag"))


class RepositoryQueries(StoreBase):
    def repository_exists(self, name: str) -> bool:
        return self._scalar(REPOSITORY_ID, {"repository": name}) is not None

    def repositories(self, last: str | None, limit: int) -> list[str]:
        """Repository names after `last`, sorted by bytes."""
        name = self._bytewise(repositories.c.name)
        query = sa.select(repositories.c.name).order_by(name).limit(limit)
        if last:
            query = query.where(name > sort_key_before_nul(last))
        return self._read(lambda conn: list(conn.execute(query).scalars()))

    def tag_digest(self, repository: str, tag: str) -> Digest | None:
        digest: str | None = self._scalar(_TAG_DIGEST, {"repository": repository, "tag": tag})
        return None if digest is None else stored_digest(digest)

    def tags(self, repository: str, last: str | None, limit: int | None) -> list[str] | None:
        """Tag names after `last`, sorted by bytes; None when the repository does not exist."""

        def read(conn: sa.Connection) -> list[str] | None:
            repo_id = conn.execute(REPOSITORY_ID, {"repository": repository}).scalar()
            if repo_id is None:
                return None
            name = self._bytewise(tags.c.name)
            query = sa.select(tags.c.name).where(tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > sort_key_before_nul(last))
            if limit is not None:
                query = query.limit(limit)
            return list(conn.execute(query).scalars())

        return self._read(read)

    def delete_tag(self, repository: str, tag: str, events: Sequence[EventRecord] = ()) -> bool:
        """Remove a tag and write `events`; False (and no events) when there was no such tag."""
        params = {"repository": repository, "tag": tag}

        def delete(conn: sa.Connection) -> bool:
            if conn.execute(_DELETE_TAG, params).rowcount == 0:
                return False
            self._insert_events(conn, events)
            return True

        return self._write(delete)
