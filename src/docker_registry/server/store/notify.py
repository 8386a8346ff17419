"""Cross-node change signals on PostgreSQL: every write transaction that changes registry data sends `NOTIFY` (see
`engine.signal_change`), and each worker of each node listens on a connection of its own.

The listening connection's socket is watched by the worker's event loop (so notifications never pile up on an idle
node), and each check (once per event-loop iteration, see `registry.cache`) first makes an empty-query round trip on
it, which brings in every notification of a commit acknowledged before the check (see `_drain`). While that
connection is down (PostgreSQL restarted, a network cut), notifications may be lost: the watcher then reports itself
unreliable and the caches live for one request only, and it reconnects in the background, counting everything
before the new `LISTEN` as changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .engine import NOTIFY_CHANNEL

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

RECONNECT_DELAY = 1.0
"""Seconds between attempts to listen again; caches stay off meanwhile."""
CONNECT_TIMEOUT = 5
ROUND_TRIP_TIMEOUT = 1.0
"""At most this long a check blocks the worker's event loop; a slower answer counts as a lost connection."""
CONNECTION_OK = 0
"""libpq's CONNECTION_OK."""


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL (`postgresql+psycopg://...`) as libpq takes it."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresChangeWatcher:
    """`changed()` answers whether any node committed since the last look, as `engine.ChangeWatcher` does for
    SQLite; `reliable` is False while no notification can be trusted to arrive."""

    def __init__(self, url: str) -> None:
        self._conninfo = libpq_url(url)
        self._conn: psycopg.Connection[Any] | None = None  # psycopg is imported when used: it is an extra
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._changes = 0
        self._seen = -1
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Listen from now on, reconnecting in the background whenever the connection is lost."""
        self._loop = asyncio.get_running_loop()
        self._reconnect = asyncio.ensure_future(self._listen_again())

    @property
    def reliable(self) -> bool:
        return self._conn is not None

    def changed(self) -> bool:
        if self._conn is None:
            return True
        self._drain(round_trip=True)
        if self._changes != self._seen:
            self._seen = self._changes
            return True
        return False

    def _drain(self, round_trip: bool = False) -> None:
        """Read every notification received; a broken connection counts as a change.

        With `round_trip`, first an empty query and its answer: PostgreSQL signals listeners while a writer commits,
        before the writer hears back, and a signalled backend sends its notifications before it reads our query,
        so once the answer is in every commit that another node acknowledged before this call has been seen.
        Without it, the notifications that raced the request here would be missed (seen in tests: a stale tag one
        time in a few dozen)."""
        conn = self._conn
        if conn is None:
            return
        pgconn = conn.pgconn
        try:
            if round_trip:
                _round_trip(pgconn)
            else:
                pgconn.consume_input()
            while pgconn.notifies() is not None:
                self._changes += 1
            if pgconn.status != CONNECTION_OK:
                raise ConnectionError("connection closed")
        except Exception as exc:  # psycopg.OperationalError and kin: the connection is gone
            log.warning("lost the PostgreSQL connection listening for changes (%s); caches off until it is back", exc)
            self._drop()
            if not self._closed and self._loop is not None:
                self._reconnect = self._loop.create_task(self._listen_again())

    def _on_readable(self) -> None:
        self._drain()

    def _drop(self) -> None:
        self._changes += 1
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._fd = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def _listen_again(self) -> None:
        while not self._closed:
            try:
                conn = await asyncio.to_thread(self._connect)
            except Exception as exc:
                log.debug("cannot listen for changes yet: %s", exc)
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            if self._closed:
                conn.close()
                return
            self._conn = conn
            self._changes += 1  # whatever was committed while nobody listened
            self._fd = conn.pgconn.socket
            assert self._loop is not None
            self._loop.add_reader(self._fd, self._on_readable)
            return

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        # keepalives: a peer gone without a word (a cut network) is noticed within seconds, not hours
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
        try:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        self._closed = True
        if self._reconnect is not None and not self._reconnect.done():
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        self._drop()

    def close(self) -> None:
        """Synchronous close, for callers outside the event loop."""
        self._closed = True
        self._drop()


def _round_trip(pgconn: psycopg.pq.abc.PGconn) -> None:
    """An empty query and its answer, within ROUND_TRIP_TIMEOUT (else the connection counts as lost)."""
    pgconn.send_query(b"")
    deadline = time.monotonic() + ROUND_TRIP_TIMEOUT
    while True:
        while pgconn.is_busy():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pgconn.socket], [], [], remaining)[0]:
                raise TimeoutError(f"PostgreSQL did not answer within {ROUND_TRIP_TIMEOUT}s")
            pgconn.consume_input()
        if pgconn.get_result() is None:
            return
