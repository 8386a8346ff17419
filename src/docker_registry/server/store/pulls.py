"""When content cached by the pull-through cache was last pulled: recorded by the cache, read by garbage
collection, which may drop what nobody pulled for the upstream's ttl."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import StoreBase, per_dialect, stored_digest
from .tables import proxy_pulls, repositories

_UPSERT = per_dialect(
    lambda insert: (
        statement := insert(proxy_pulls).values(
            repository_id=sa.bindparam("repository_id"),
            digest=sa.bindparam("digest"),
            kind=sa.bindparam("kind"),
            pulled_at=sa.bindparam("pulled_at"),
        )
    ).on_conflict_do_update(
        index_elements=["repository_id", "digest"], set_={"pulled_at": statement.excluded.pulled_at}
    )
)


class PullQueries(StoreBase):
    def record_pulls(self, pulls: Sequence[tuple[str, Digest, str, float]]) -> None:
        """(repository, digest, kind, time) for each pull; a repository that no longer exists is skipped."""

        def record(conn: sa.Connection) -> None:
            names = sorted({repository for repository, _, _, _ in pulls})
            ids = dict(
                conn.execute(
                    sa.select(repositories.c.name, repositories.c.id)
                    .where(repositories.c.name.in_(names))
                    # as `StoreBase._repository_id`: garbage collection cannot delete these rows under the insert
                    .with_for_update(read=True, key_share=True)
                )
                .tuples()
                .all()
            )
            rows = [
                {"repository_id": ids[r], "digest": str(d), "kind": k, "pulled_at": t}
                for r, d, k, t in sorted(pulls, key=lambda p: (p[0], str(p[1])))
                if r in ids
            ]
            if rows:
                conn.execute(_UPSERT[self._dialect], rows)

        self._write(record)

    def pulled_before(self, cutoff: float, limit: int = 1000) -> list[tuple[str, Digest, str, float]]:
        """Cached content last pulled before `cutoff` (oldest first): what garbage collection may drop."""
        query = (
            sa.select(repositories.c.name, proxy_pulls.c.digest, proxy_pulls.c.kind, proxy_pulls.c.pulled_at)
            .select_from(proxy_pulls.join(repositories))
            .where(proxy_pulls.c.pulled_at < cutoff)
            .order_by(proxy_pulls.c.pulled_at)
            .limit(limit)
        )
        rows = self._read(lambda conn: conn.execute(query).all())
        return [(r.name, stored_digest(r.digest), r.kind, r.pulled_at) for r in rows]
