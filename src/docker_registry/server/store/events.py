"""The events outbox of notifications: records written beside the change they report, a delivery cursor per
endpoint, and the lease that lets exactly one process deliver.

Order: an event's id is its place in delivery. On SQLite writers are serialized, so ids grow in commit order. On
PostgreSQL two transactions may take ids 5 and 6 and commit 6 first; a deliverer that saw 6 and moved its cursor
past 5 would skip 5 for ever. Every transaction that inserts events therefore takes one transaction-scoped advisory
lock first, as its last statement before the commit: inserting transactions commit one after another, in id
order, and the lock is held only for the insert and the commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from .base import StoreBase, per_dialect
from .models import Cursor, EventRecord, Lease, StoredEvent
from .tables import event_cursors, event_lease, events

_AFTER = (
    sa.select(events.c.id, events.c.created_at, events.c.payload)
    .where(events.c.id > sa.bindparam("p_position"))
    .order_by(events.c.id)
    .limit(sa.bindparam("p_limit"))
)
_EVENTS_AFTER = sa.select(sa.func.coalesce(sa.func.sum(events.c.count), 0)).where(
    events.c.id > sa.bindparam("p_position")
)
_CURSORS = sa.select(event_cursors.c.endpoint, event_cursors.c.position, event_cursors.c.given).where(
    event_cursors.c.endpoint.in_(sa.bindparam("p_endpoints", expanding=True))
)
_INSERT_CURSOR = per_dialect(
    lambda insert: (
        insert(event_cursors)
        .values(endpoint=sa.bindparam("p_endpoint"), position=0, given=0, updated_at=sa.bindparam("p_now"))
        .on_conflict_do_nothing(index_elements=["endpoint"])
    )
)
_ADVANCE = (
    event_cursors.update()
    .where(
        event_cursors.c.endpoint == sa.bindparam("p_endpoint"),
        event_cursors.c.position == sa.bindparam("p_old"),
        event_cursors.c.given == sa.bindparam("p_old_given"),
    )
    .values(position=sa.bindparam("p_new"), given=sa.bindparam("p_new_given"), updated_at=sa.bindparam("p_now"))
)
_LEASE = sa.select(event_lease.c.holder, event_lease.c.holder_process, event_lease.c.expires_at).where(
    event_lease.c.name == sa.bindparam("p_name")
)
_INSERT_LEASE = per_dialect(
    lambda insert: (
        insert(event_lease)
        .values(
            name=sa.bindparam("p_name"),
            holder=sa.bindparam("p_holder"),
            holder_process=sa.bindparam("p_process"),
            expires_at=sa.bindparam("p_expires_at"),
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
)
_TAKE_LEASE = (
    event_lease.update()
    .where(event_lease.c.name == sa.bindparam("p_name"), event_lease.c.holder == sa.bindparam("p_previous"))
    .values(
        holder=sa.bindparam("p_holder"),
        holder_process=sa.bindparam("p_process"),
        expires_at=sa.bindparam("p_expires_at"),
    )
)
_RELEASE_LEASE = event_lease.delete().where(
    event_lease.c.name == sa.bindparam("p_name"), event_lease.c.holder == sa.bindparam("p_holder")
)
_PRUNE = events.delete().where(events.c.id <= sa.bindparam("p_position"))


class EventQueries(StoreBase):
    def record_events(self, records: Sequence[EventRecord]) -> None:
        """Events with no change of their own to go with (a worker's batches of pulls, one row each); not waiting
        for the disk (they are best effort), and not emptying any worker's caches (they change no registry data)."""
        self._write(lambda conn: self._insert_events(conn, records), durable=False, signal=False)

    def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        rows = self._read(lambda conn: conn.execute(_AFTER, {"p_position": position, "p_limit": limit}).all())
        return [StoredEvent(row.id, row.created_at, row.payload) for row in rows]

    def events_after_count(self, position: int) -> int:
        """How many events the rows after `position` hold (the queue depth beyond what a deliverer read)."""
        count: int | None = self._scalar(_EVENTS_AFTER, {"p_position": position})
        return int(count or 0)

    def event_cursors(self, endpoints: Sequence[str]) -> dict[str, Cursor]:
        """Each endpoint's cursor, created at 0 (every event in the outbox) when it has none yet."""

        def cursors(conn: sa.Connection) -> dict[str, Cursor]:
            now = time.time()
            for endpoint in endpoints:
                conn.execute(_INSERT_CURSOR[self._dialect], {"p_endpoint": endpoint, "p_now": now})
            rows = conn.execute(_CURSORS, {"p_endpoints": list(endpoints)})
            return {row.endpoint: Cursor(row.position, row.given) for row in rows}

        return self._write(cursors, durable=False, signal=False)

    def advance_cursor(self, endpoint: str, old: Cursor, new: Cursor) -> bool:
        """Move an endpoint's cursor from `old` to `new`; False when it is not at `old` (another deliverer moved it:
        this one has lost its lease). Not waiting for the disk: a cursor lost to a power failure means events are
        sent again, never lost."""
        params = {
            "p_endpoint": endpoint,
            "p_old": old.position,
            "p_old_given": old.given,
            "p_new": new.position,
            "p_new_given": new.given,
            "p_now": time.time(),
        }
        return self._write(lambda conn: conn.execute(_ADVANCE, params).rowcount == 1, durable=False, signal=False)

    def take_lease(
        self, name: str, holder: str, process: str | None, duration: float, holder_dead: Callable[[str | None], bool]
    ) -> Lease:
        """Hold the lease `name` for `duration` more seconds: renew it, or take it when it is free, expired or its
        holder's process is dead (`holder_dead`, given its recorded process). One compare-and-set: of several
        processes asking at once, one wins."""

        def take(conn: sa.Connection) -> Lease:
            now = time.time()
            params = {"p_name": name, "p_holder": holder, "p_process": process, "p_expires_at": now + duration}
            row = conn.execute(_LEASE, params).first()
            if row is None:
                if conn.execute(_INSERT_LEASE[self._dialect], params).rowcount == 1:
                    return Lease(True, now + duration)
                row = conn.execute(_LEASE, params).first()
                if row is None:
                    return Lease(False, 0.0)
            if row.holder != holder and row.expires_at >= now and not holder_dead(row.holder_process):
                return Lease(False, row.expires_at)
            taken = conn.execute(_TAKE_LEASE, {**params, "p_previous": row.holder}).rowcount == 1
            return Lease(taken, now + duration if taken else row.expires_at)

        return self._write(take, durable=False, signal=False)

    def release_lease(self, name: str, holder: str) -> None:
        self._write(
            lambda conn: conn.execute(_RELEASE_LEASE, {"p_name": name, "p_holder": holder}), durable=False, signal=False
        )

    def prune_events(self, position: int) -> int:
        """Forget the rows every endpoint has been given whole (ids up to `position`); how many were removed."""
        return self._write(
            lambda conn: conn.execute(_PRUNE, {"p_position": position}).rowcount, durable=False, signal=False
        )
