"""Connections to the metadata database: URL resolution, SQLite tuning, write transactions, change detection.

SQLite is shared by several worker processes: WAL lets readers run beside the one writer, `busy_timeout` makes a
writer wait for the lock instead of failing, and write transactions start with `BEGIN IMMEDIATE` so two writers
never deadlock upgrading read locks.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from ..config import Config

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
LOCK_RETRIES = 5


def database_url(config: Config) -> str:
    if config.database.url:
        return config.database.url
    root = str(config.storage.options.get("rootdirectory") or "./data")
    return f"sqlite:///{os.path.abspath(os.path.join(root, 'registry.db'))}"


def create_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")  # NORMAL in WAL may lose a commit (an acknowledged push) on power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: sa.Engine, durable: bool = True) -> Iterator[sa.Connection]:
    """A write transaction. `durable=False` commits without waiting for the disk, for state a power loss may take
    anyway (upload sessions: their chunks are not fsynced either); the next durable commit carries it along, as
    SQLite's WAL and PostgreSQL's log are written in order."""
    with engine.connect() as conn:
        conn.execution_options(write=True)
        relaxed = not durable and engine.dialect.name == "sqlite"
        if relaxed:
            _set_synchronous(conn, "NORMAL")  # SQLite refuses to change it inside a transaction
        try:
            with conn.begin():
                if not durable and engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
        finally:
            if relaxed:
                _set_synchronous(conn, "FULL")


def _set_synchronous(conn: sa.Connection, level: str) -> None:
    dbapi_conn = conn.connection.dbapi_connection
    if dbapi_conn is None:  # invalidated: it is discarded, never handed back to the pool
        return
    try:
        dbapi_conn.execute(f"PRAGMA synchronous={level}")
    except sqlite3.Error:
        conn.invalidate()  # never hand a connection of unknown durability back to the pool
        raise


def with_retries(fn: Callable[[], T]) -> T:
    """Run a write, retrying when SQLite reports the database locked beyond the busy timeout."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn()
        except OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class ChangeWatcher:
    """Tells cheaply whether any connection committed since the last look, so per-process caches stay fresh.

    For SQLite, `PRAGMA data_version` on a dedicated connection changes whenever another connection commits and
    costs microseconds. Other databases have no such signal: `changed()` then always answers True.
    """

    def __init__(self, url: str) -> None:
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        if url.startswith("sqlite:///"):
            path = sa.make_url(url).database
            if path and path != ":memory:":
                self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    @property
    def reliable(self) -> bool:
        return self._conn is not None

    def changed(self) -> bool:
        if self._conn is None:
            return True
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._version = version
            return True
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
