"""What the pull-through cache shares between its workers and nodes: when the upstream last confirmed each cached
tag (the ttl clock), and who is fetching a manifest right now (so the others wait instead of asking too).

Both are transient hints: losing them to a power cut costs one more upstream request, never wrong content.
"""

from __future__ import annotations

import sqlalchemy as sa

from .base import StoreBase, per_dialect
from .tables import proxy_fetches, proxy_tag_checks, repositories

_CHECKED_AT = (
    sa.select(proxy_tag_checks.c.checked_at)
    .select_from(proxy_tag_checks.join(repositories))
    .where(repositories.c.name == sa.bindparam("repository"), proxy_tag_checks.c.tag == sa.bindparam("tag"))
)
_MARK = per_dialect(
    lambda insert: (
        statement := insert(proxy_tag_checks).from_select(
            ["repository_id", "tag", "checked_at"],
            sa.select(
                repositories.c.id,
                sa.bindparam("tag", type_=sa.String),
                sa.bindparam("checked_at", type_=sa.Float),
            ).where(repositories.c.name == sa.bindparam("repository")),
        )
    ).on_conflict_do_update(index_elements=["repository_id", "tag"], set_={"checked_at": statement.excluded.checked_at})
)
_DROP_EXPIRED = proxy_fetches.delete().where(
    proxy_fetches.c.key == sa.bindparam("key"), proxy_fetches.c.expires_at < sa.bindparam("now")
)
_CLAIM = per_dialect(
    lambda insert: (
        insert(proxy_fetches)
        .values(key=sa.bindparam("key"), owner=sa.bindparam("owner"), expires_at=sa.bindparam("expires_at"))
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(proxy_fetches.c.key)
    )
)
_RELEASE = proxy_fetches.delete().where(
    proxy_fetches.c.key == sa.bindparam("key"), proxy_fetches.c.owner == sa.bindparam("owner")
)
_CLAIMED = sa.select(proxy_fetches.c.owner).where(
    proxy_fetches.c.key == sa.bindparam("key"), proxy_fetches.c.expires_at >= sa.bindparam("now")
)


class ProxyStateQueries(StoreBase):
    def proxy_tag_checked_at(self, repository: str, tag: str) -> float | None:
        """When the upstream last confirmed `repository:tag` (wall clock), None when never."""
        value = self._scalar(_CHECKED_AT, {"repository": repository, "tag": tag})
        return None if value is None else float(value)

    def mark_proxy_tag_checked(self, repository: str, tag: str, at: float) -> None:
        """Record that the upstream confirmed the tag at `at`; nothing when the repository is gone."""
        params = {"repository": repository, "tag": tag, "checked_at": at}
        self._write(lambda conn: conn.execute(_MARK[self._dialect], params), durable=False)

    def claim_proxy_fetch(self, key: str, owner: str, now: float, lease: float) -> bool:
        """True when `owner` now holds the fetch of `key` until `now + lease` (an expired claim is taken over)."""

        def claim(conn: sa.Connection) -> bool:
            conn.execute(_DROP_EXPIRED, {"key": key, "now": now})
            row = conn.execute(_CLAIM[self._dialect], {"key": key, "owner": owner, "expires_at": now + lease})
            return row.first() is not None

        return self._write(claim, durable=False)

    def release_proxy_fetch(self, key: str, owner: str) -> None:
        self._write(lambda conn: conn.execute(_RELEASE, {"key": key, "owner": owner}), durable=False)

    def proxy_fetch_claimed(self, key: str, now: float) -> bool:
        """True while someone holds an unexpired claim on the fetch of `key`."""
        return self.proxy_fetch_owner(key, now) is not None

    def proxy_fetch_owner(self, key: str, now: float) -> str | None:
        """Who holds an unexpired claim on the fetch of `key`, if anyone."""
        owner: str | None = self._scalar(_CLAIMED, {"key": key, "now": now})
        return owner
