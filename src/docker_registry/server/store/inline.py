"""Short SQLite reads run on the event loop's own thread, for the one a push makes per layer.

A client HEADs each layer before pushing it (skopeo twice, each on a new connection), and for a layer that is not
there yet the per-process caches have no answer: it is a database read. In the readers' pool such a read took
about 350 µs of the server's CPU where the queries themselves take under 80: a hand-off to a pool thread and the
answer back through the loop's self-pipe, each waking a sleeping thread (the loop of a worker serving one push at
a time sleeps between requests), with the GIL changing hands twice. A skopeo push of 10 layers made 17-19 of them.

Run here instead, a read must never wait for anything but its own pages:
- its connection has a busy timeout of zero, so where SQLite would wait for a lock (in WAL mode a reader only
  does while another connection recovers the log after a crash, or at the instant a writer restarts it) it
  raises at once, and the caller runs the read in the readers' pool as before (`InlineReads.run` answers None);
- one connection, kept open between reads, used only by the thread that opened it (the loop's): any other thread
  gets None too; no transaction outlives a read, so checkpoints are never held back;
- only queries of a row or two by primary key or unique index, whose pages are the hot ones, belong here.
The connection comes from an engine of its own (`engine.create_engine` with a lock timeout of zero), timed by the
database metrics like the others. PostgreSQL, a network round trip away, keeps every read in the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from .engine import create_engine

T = TypeVar("T")


class InlineReads:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, lock_timeout=0.0, pool_size=1)
        """SQLite's `url`, busy timeout zero, one connection (see the module's docstring)."""
        self._conn: sa.Connection | None = None
        self._thread: int | None = None

    def run(self, work: Callable[[sa.Connection], T]) -> T | None:
        """`work`'s answer in one read transaction, or None when it must run elsewhere: another thread than the
        loop's, or SQLite could not answer without waiting (the connection is then dropped and opened afresh the
        next time, so one in an unknown state is never reused). `work` must not answer None itself."""
        thread = threading.get_ident()
        if self._thread is None:
            self._thread = thread
        elif thread != self._thread:
            return None
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._conn = self.engine.connect()
            with conn.begin():
                return work(conn)
        except sa.exc.DBAPIError:
            self._drop()
            return None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sa.exc.DBAPIError:
                conn.invalidate()

    def close(self) -> None:
        self._drop()
        self.engine.dispose()
