"""Connections to the metadata database: URL resolution, SQLite tuning, write transactions, change detection.

SQLite is shared by several worker processes: WAL lets readers run beside the one writer, `busy_timeout` makes a
writer wait for the lock instead of failing, and write transactions start with `BEGIN IMMEDIATE` so two writers
never deadlock upgrading read locks. A writer waits for the lock at most `lock_timeout` (`database.locktimeout`)
on either engine: a lock held elsewhere for longer (a backup, a stuck process) makes writes answer 503 quickly
instead of queueing every request behind them.

A SQLite connection opened while the database could not be written (a read-only mount, a full or failing disk)
stays read-only for good; such an error marks the connection stale, so the pool opens fresh ones and writes work
again as soon as the cause is gone.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from ..config import Config
from .prepared import run_on_cursor

if TYPE_CHECKING:
    from .writegate import WriteGate

T = TypeVar("T")
NOTIFY_CHANNEL = "docker_registry_changes"
DEFAULT_LOCK_TIMEOUT = 5.0
MAINTENANCE_PRAGMAS = ("temp_store=MEMORY", "wal_autocheckpoint=10000")
"""SQLite settings of a maintenance command's connections. A collection's deletions are scattered over whole
tables (random digests), so each batch dirties thousands of pages, and with SQLite's default the WAL was
checkpointed every 1,000 pages: dozens of checkpoints, each copying pages that the next batch rewrites anyway and
fsyncing the database file. After 10,000 pages (40 MiB) a page rewritten by several batches is copied once, with
a tenth of the fsyncs: on a busy disk this took the statements of a collection of 100,000 blobs from 2.4-2.6 s
to 1.4-1.5 s (the same on an idle one). Sets built in memory (the links' set difference) stay there. The server's
own connections still checkpoint at 1,000 pages, and durability is unchanged: a checkpoint only moves committed
pages from the WAL into the database file. A larger page cache did not pay for its memory (16 MiB for each
pooled connection)."""
_STALE_CONNECTION = re.compile(r"readonly|read-only|unable to open database|disk I/O error", re.IGNORECASE)


def database_url(config: Config) -> str:
    if config.database.url:
        return config.database.url
    root = str(config.storage.options.get("rootdirectory") or "./data")
    return f"sqlite:///{os.path.abspath(os.path.join(root, 'registry.db'))}"


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    path = sa.make_url(url).database
    return path if path and path != ":memory:" else None


def with_driver(url: str) -> str:
    """`postgresql://` (and `postgres://`) with psycopg 3, the driver the `postgres` extra installs: SQLAlchemy's
    default for them is psycopg2, which nothing installs."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def create_engine(
    url: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, pool_size: int | None = None, *, maintenance: bool = False
) -> sa.Engine:
    """An engine for `url`; `pool_size` should cover every thread that may hold a connection at once.

    `maintenance`: for a one-off command that rewrites much of the database (`garbage-collect`), SQLite connections
    get `MAINTENANCE_PRAGMAS`. They change only how this process's connections cache and checkpoint, never what
    is written or when a commit is durable, so they are safe while the registry serves."""
    pool = {} if pool_size is None else {"pool_size": pool_size}
    url = with_driver(url)
    if not url.startswith("sqlite"):
        # lock_timeout bounds waits for row and table locks, the writer's only waits on PostgreSQL
        options = f"-c lock_timeout={int(lock_timeout * 1000)}"
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": options}, **pool)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": lock_timeout}, **pool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cur.execute("PRAGMA synchronous=FULL")  # NORMAL in WAL may lose a commit (an acknowledged push) on power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if maintenance:

        @event.listens_for(engine, "connect")
        def _maintenance(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            for pragma in MAINTENANCE_PRAGMAS:
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        run_on_cursor(conn, "BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN").close()

    @event.listens_for(engine, "handle_error")
    def _stale(context: sa.engine.ExceptionContext) -> None:
        if _STALE_CONNECTION.search(str(context.original_exception)):
            context.is_disconnect = True  # drop this connection and the pool's others, opened in the same state

    return engine


@contextmanager
def write_transaction(
    engine: sa.Engine,
    durable: bool = True,
    gate: WriteGate | None = None,
    signal: bool = True,
    kept: sa.Connection | None = None,
) -> Iterator[sa.Connection]:
    """A write transaction, behind `gate` when given. `durable=False` commits without waiting for the disk, for
    state a power loss may take anyway (upload sessions: their chunks are not fsynced either); the next durable
    commit carries it along, as SQLite's WAL and PostgreSQL's log are written in order.

    With `signal` (the default) the commit tells every worker's caches that registry data changed (see
    `signal_change`); `signal=False` is for writes that change nothing they cache (the notifications outbox: pull
    events, cursors, the delivery lease), which would otherwise empty them every second.

    `kept`: a connection the caller holds across transactions (the writer thread's, see `StoreBase.run_batch`),
    used instead of one checked out of the pool and left open afterwards."""
    sqlite = engine.dialect.name == "sqlite"
    connection = nullcontext(kept) if kept is not None else engine.connect()
    with gate.held() if gate is not None else nullcontext(), connection as conn:
        if not conn.get_execution_options().get("write"):  # a kept connection has it from its first write
            conn.execution_options(write=True)
        if sqlite:
            # SQLite refuses to change it inside a transaction; a connection keeps its level until a write wants the
            # other, so runs of session writes (or of durable ones) switch nothing
            level = "FULL" if durable else "NORMAL"
            if conn.connection.info.get("synchronous", "FULL") != level:
                _set_synchronous(conn, level)
                conn.connection.info["synchronous"] = level
        with conn.begin():
            if engine.dialect.name == "postgresql" and not durable:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            if signal:
                signal_change(conn)
            yield conn


def signal_change(conn: sa.Connection) -> None:
    """Make the open write transaction, once committed, empty every worker's caches (see `Watcher`); once per
    transaction is enough, more is harmless.

    PostgreSQL: a NOTIFY, delivered at commit to every node's listener (see `notify`). SQLite: the database
    header's `user_version` (free for applications to use; no schema change) counts such commits, and
    `ChangeWatcher` reads it whenever `data_version` says that anything at all was committed."""
    dialect = conn.engine.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")
    elif dialect == "sqlite":
        cursor = run_on_cursor(conn, "PRAGMA user_version")
        row = cursor.fetchone()
        cursor.close()
        generation = row[0] if row else 0
        run_on_cursor(conn, f"PRAGMA user_version = {(int(generation) + 1) % 2**31}").close()


def _set_synchronous(conn: sa.Connection, level: str) -> None:
    dbapi_conn = conn.connection.dbapi_connection
    if dbapi_conn is None:  # invalidated: it is discarded, never handed back to the pool
        return
    try:
        dbapi_conn.execute(f"PRAGMA synchronous={level}")
    except sqlite3.Error:
        conn.invalidate()  # never hand a connection of unknown durability back to the pool
        raise


RETRIED_STATES = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock and serialization failures: the transaction was rolled back whole and may run again."""


def with_retries(fn: Callable[[], T], lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> T:
    """Run a write, again while SQLite reports the database locked (or PostgreSQL a deadlock it broke) and
    `lock_timeout` has not passed (the busy timeout already waits that long for a lock held elsewhere: retries only
    cover an immediate SQLITE_BUSY)."""
    deadline = time.monotonic() + lock_timeout
    attempt = 0
    while True:
        try:
            return fn()
        except OperationalError as e:
            remaining = deadline - time.monotonic()
            text, state = str(e), getattr(e.orig, "sqlstate", None)
            if ("locked" not in text and "busy" not in text and state not in RETRIED_STATES) or remaining <= 0:
                raise
            attempt += 1
            time.sleep(min(0.05 * attempt, remaining))


class Watcher(Protocol):
    """What the per-process caches ask before they are read (see `registry.cache`)."""

    @property
    def reliable(self) -> bool:
        """False when `changed()` cannot be trusted to see commits made elsewhere: caches then live for a request."""

    def changed(self) -> bool:
        """Whether anything was committed since the last call (always True when not `reliable`)."""


class ChangeWatcher:
    """Tells cheaply whether any connection committed a change of registry data since the last look, so
    per-process caches stay fresh.

    For SQLite, `PRAGMA data_version` on a dedicated connection changes whenever another connection commits and
    costs microseconds; only then is the generation that `signal_change` counts read, so commits to the
    notifications outbox alone (pull events, several a second) leave the caches be. PostgreSQL has
    `notify.PostgresChangeWatcher`; any other database no signal at all: `changed()` then always answers True.
    """

    def __init__(self, url: str) -> None:
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._generation: int | None = None
        path = sqlite_file(url)
        if path is not None:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    @property
    def reliable(self) -> bool:
        return self._conn is not None

    def changed(self) -> bool:
        if self._conn is None:
            return True
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version  # before reading the generation: a commit in between shows in the next look
        generation = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if generation == self._generation:
            return False
        self._generation = generation
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
