"""What every group of queries shares: the engine, the dialect's INSERT, and one way to run a read or a write."""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from docker_registry.core.digest import Digest, parse_digest

from .engine import DEFAULT_LOCK_TIMEOUT, signal_change, with_retries, write_transaction
from .models import EventRecord
from .prepared import Prepared
from .reserve import SpaceReserve
from .tables import blobs, events, repositories, repository_blobs
from .writegate import WriteGate

T = TypeVar("T")
S = TypeVar("S")

Insert = Callable[[sa.Table], Any]
"""The dialect's `insert` (`sqlite.insert` or `postgresql.insert`: both offer ON CONFLICT)."""


DIALECTS = ("sqlite", "postgresql")


class PerDialect(Mapping[str, S]):
    """A statement in one version per dialect, each built when first asked for: importing PostgreSQL's dialect
    (with the modules of all its drivers) cost a SQLite command's start-up tens of milliseconds for nothing."""

    def __init__(self, build: Callable[[Insert], S]) -> None:
        self._build = build
        self._built: dict[str, S] = {}

    def __getitem__(self, dialect: str) -> S:
        if dialect not in self._built:
            if dialect not in DIALECTS:
                raise KeyError(dialect)
            insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
            self._built[dialect] = self._build(insert)  # two threads may both build it: either result serves
        return self._built[dialect]

    def __iter__(self) -> Iterator[str]:
        return iter(DIALECTS)

    def __len__(self) -> int:
        return len(DIALECTS)


def per_dialect(build: Callable[[Insert], S]) -> PerDialect[S]:
    """A statement built once per dialect, for those that differ (ON CONFLICT): pick with `StoreBase._dialect`."""
    return PerDialect(build)


# The store's hot statements are built once, with placeholders (`bindparam`), and run with parameters: SQLAlchemy
# then skips building, coercing and cache-keying a statement on every call (about 5 times the cost of running it).
# The hottest are also `Prepared`: on SQLite their compiled text runs directly (see `prepared`).

REPOSITORY_ID = sa.select(repositories.c.id).where(repositories.c.name == sa.bindparam("repository"))
"""The id of the repository named `repository`."""

REPOSITORY_ID_FOR_WRITE = REPOSITORY_ID.with_for_update(read=True, key_share=True)
"""The same for a write that adds to the repository: on PostgreSQL the row is locked `FOR KEY SHARE`, so garbage
collection cannot delete the repository as empty under the write (it locks the row `FOR UPDATE`, then checks);
a row it deleted first is not found, and the write creates the repository again. SQLite's writers take turns."""

REPOSITORY_ID_OF = REPOSITORY_ID.scalar_subquery()
"""The same as a subquery: NULL when the repository does not exist, so a statement filtering on it matches nothing
rather than needing a separate look-up first."""

_INSERT_REPOSITORY = Prepared(
    per_dialect(
        lambda insert: (
            insert(repositories)
            .values(name=sa.bindparam("repository"), created_at=sa.bindparam("now"))
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(repositories.c.id)
        )
    )
)
_REPOSITORY_ID_FOR_WRITE = Prepared(REPOSITORY_ID_FOR_WRITE)
_INSERT_BLOB = Prepared(
    per_dialect(
        lambda insert: (
            insert(blobs)
            .values(digest=sa.bindparam("digest"), size=sa.bindparam("size"), created_at=sa.bindparam("now"))
            .on_conflict_do_nothing(index_elements=["digest"])
        )
    )
)
_INSERT_REPOSITORY_BLOB = Prepared(
    per_dialect(
        lambda insert: (
            insert(repository_blobs)
            .values(
                repository_id=sa.bindparam("repository_id"),
                digest=sa.bindparam("digest"),
                created_at=sa.bindparam("now"),
            )
            # linked again (an upload, a mount): no longer a candidate of garbage collection
            .on_conflict_do_update(index_elements=["repository_id", "digest"], set_={"gc_candidate_since": None})
        )
    )
)

_INSERT_EVENT = Prepared(
    events.insert().values(
        created_at=sa.bindparam("created_at"), payload=sa.bindparam("payload"), count=sa.bindparam("count")
    )
)
EVENTS_LOCK_KEY = 0x6576656E7473
"""The PostgreSQL advisory lock that orders the transactions inserting events ("events" in hex; see `events`)."""


class StoreBase:
    def __init__(
        self,
        engine: sa.Engine,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        gate: WriteGate | None = None,
        reserve: SpaceReserve | None = None,
    ) -> None:
        self.engine = engine
        self.lock_timeout = lock_timeout
        self.gate = gate
        """Orders this database's writers across processes (SQLite); see `writegate`."""
        self.reserve = reserve
        """Room kept for the database on a full disk (SQLite); see `reserve`."""
        self._batch = threading.local()
        """In the thread running a batch of writes (`run_batch`): the batch's connection."""
        self._dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
        """Which of a `per_dialect` statement's versions this store runs."""

    def close(self) -> None:
        self.engine.dispose()

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            return work(conn)

    def _scalar(self, query: sa.Executable, params: dict[str, Any]) -> Any:
        return self._read(lambda conn: conn.execute(query, params).scalar())

    def _write(self, work: Callable[[sa.Connection], T], *, durable: bool = True, signal: bool = True) -> T:
        """Run `work` in one write transaction, again from the start while SQLite reports the database locked
        (within the lock timeout).
        `durable=False` is for state a power loss may take anyway, `signal=False` for writes that change nothing
        the registry's caches hold (see `write_transaction`)."""

        batch_conn: sa.Connection | None = getattr(self._batch, "conn", None)
        if batch_conn is not None:
            if signal:
                self._batch.signal = True
            if not self._batch.savepoints:  # alone, or a batch's first try: a refusal rolls all of it back
                return work(batch_conn)
            return _in_savepoint(batch_conn, work)

        def attempt() -> T:
            with write_transaction(self.engine, durable, self.gate, signal) as conn:
                return work(conn)

        return self._commit(attempt)

    def _commit(self, attempt: Callable[[], T]) -> T:
        """Run a write transaction (again while the database is locked, within the lock timeout); on a full disk,
        once more after giving up the space reserve, so deletes can free space."""
        try:
            result = with_retries(attempt, self.lock_timeout)
        except sa.exc.OperationalError as e:
            if "database or disk is full" not in str(e) or self.reserve is None or not self.reserve.release():
                raise
            result = with_retries(attempt, self.lock_timeout)
        if self.reserve is not None:
            self.reserve.ensure()
        return result

    def rehearse(self, writes: Sequence[Callable[[], Any]]) -> None:
        """Run write methods of this store in one transaction that is then rolled back: nothing is changed, but
        their statements are compiled and cached (SQLAlchemy's cache, `Prepared`) and a connection is opened,
        which a freshly started worker would otherwise do on its first client's request (the pull-through cache
        rehearses its writes at start). Each runs in a savepoint: one that refuses (a reference missing) does not
        keep the others from running. Not for the writer thread of `batching`, whose batch this would join."""

        class _Rehearsed(Exception):
            pass

        with contextlib.suppress(_Rehearsed), write_transaction(self.engine, False, self.gate, signal=False) as conn:
            self._batch.conn, self._batch.savepoints, self._batch.signal = conn, True, False
            try:
                for write in writes:
                    with contextlib.suppress(Exception):
                        write()
            finally:
                self._batch.conn = None
            raise _Rehearsed  # rolls the transaction back

    def run_batch(
        self, writes: list[Callable[[], Any]], durable: bool, keep_connection: bool = False, gate_held: bool = False
    ) -> list[tuple[Any, BaseException | None]]:
        """Run several write methods of this store in one transaction (see `batching`): each one's result or
        error (a refusal such as BadReference, rolled back alone), once the whole transaction committed. An error
        of the database itself, in any of them or at the commit, is raised for all.

        The writes run without savepoints at first: a SAVEPOINT and a RELEASE around each were a third of a small
        write's statements (profiled: 9 of 26 per small blob), for the rare write that refuses. When one refuses,
        what it did before refusing may be in the transaction, so the transaction is rolled back and the batch runs
        again, now each write in a SAVEPOINT, where a refusal rolls back alone. A write alone in its batch never
        needs one: its refusal rolls the transaction back. The writes are run again from the start anyway when
        SQLite reports the database locked (`with_retries`), so running them twice is nothing new to them.
        `keep_connection` (the writer thread of `batching`, on SQLite): this thread keeps one connection for all
        its batches instead of checking one out of the pool for each (a tenth of a small write's CPU went to
        checkout and check-in); it is dropped after any error, so a stale connection is never reused.
        `gate_held`: the caller holds `self.gate` already (the writer thread of `batching` takes it before it
        gathers its batch)."""

        def attempt(savepoints: bool) -> list[tuple[Any, BaseException | None]]:
            outcomes: list[tuple[Any, BaseException | None]] = []
            kept = self._kept_connection() if keep_connection else None
            try:
                gate = None if gate_held else self.gate
                with write_transaction(self.engine, durable, gate, signal=False, kept=kept) as conn:
                    self._batch.conn, self._batch.savepoints = conn, savepoints
                    self._batch.signal = False
                    try:
                        for write in writes:
                            try:
                                outcomes.append((write(), None))
                            except Exception as error:
                                if _database_failed(error):
                                    raise  # not this write's failure: the transaction is lost for all
                                if not savepoints:
                                    raise _Refused(error) from error  # roll the transaction back
                                outcomes.append((None, error))
                        if self._batch.signal:  # some write of the batch asked for it (most do)
                            signal_change(conn)
                    finally:
                        self._batch.conn = None
            except _Refused as refused:
                if len(writes) > 1:
                    return attempt(savepoints=True)
                return [(None, refused.error)]
            except BaseException:
                self._drop_kept_connection()
                raise
            return outcomes

        return self._commit(lambda: attempt(savepoints=False))

    def _kept_connection(self) -> sa.Connection | None:
        """This thread's kept connection (opened on first use); None on PostgreSQL, whose connections are checked
        (pre-pinged) at every checkout, which a kept one would skip."""
        if self._dialect != "sqlite":
            return None
        conn: sa.Connection | None = getattr(self._batch, "kept", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._batch.kept = self.engine.connect()
        return conn

    def _drop_kept_connection(self) -> None:
        conn: sa.Connection | None = getattr(self._batch, "kept", None)
        self._batch.kept = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def release_thread_connection(self) -> None:
        """Hand this thread's kept connection back (its thread is ending)."""
        self._drop_kept_connection()

    def _bytewise(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """Lists are sorted by bytes, as the spec's lexical order; SQLite does so already, PostgreSQL needs "C"."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    def _repository_id(self, conn: sa.Connection, name: str, now: float) -> int:
        """The repository's id, creating the repository on its first write."""
        params = {"repository": name, "now": now}
        repo_id: int | None = _REPOSITORY_ID_FOR_WRITE.run(conn, params).scalar()
        if repo_id is None:
            # ON CONFLICT: another transaction created it meanwhile (PostgreSQL); then it is there to select
            repo_id = _INSERT_REPOSITORY.run(conn, params).scalar()
            if repo_id is None:
                repo_id = _REPOSITORY_ID_FOR_WRITE.run(conn, params).scalar_one()
        return repo_id

    def _insert_events(self, conn: sa.Connection, records: Sequence[EventRecord]) -> None:
        """Add `records` to the outbox within the caller's transaction; call it last, just before the commit."""
        if not records:
            return
        if self._dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK_KEY})
        _INSERT_EVENT.run(conn, [{"created_at": r.created_at, "payload": r.payload, "count": r.count} for r in records])

    def _link(self, conn: sa.Connection, repo_id: int, digest: Digest, size: int, now: float) -> None:
        """Record a verified blob and let the repository serve it; both idempotent."""
        _INSERT_BLOB.run(conn, {"digest": str(digest), "size": size, "now": now})
        self._link_recorded(conn, repo_id, digest, now)

    def _link_recorded(self, conn: sa.Connection, repo_id: int, digest: Digest, now: float) -> None:
        """Let the repository serve a blob this transaction found recorded (a mount's source has it): no insert
        of its row, which would do nothing; idempotent."""
        _INSERT_REPOSITORY_BLOB.run(conn, {"repository_id": repo_id, "digest": str(digest), "now": now})


class _Refused(Exception):
    """A write alone in its batch failed: carries its error out of the transaction, which is rolled back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _database_failed(error: BaseException) -> bool:
    """An error of the database itself, which loses the batch's transaction for all its writes; not a refusal of
    one write, nor a constraint one write broke (a row another transaction removed meanwhile: that write's own
    failure, rolled back alone)."""
    return isinstance(error, sa.exc.DBAPIError) and not isinstance(error, sa.exc.IntegrityError)


def _in_savepoint(conn: sa.Connection, work: Callable[[sa.Connection], T]) -> T:
    """Run `work` in a SAVEPOINT of the batch's transaction, so that a write that fails rolls back alone.

    Plain statements rather than `Connection.begin_nested()`: its bookkeeping cost more CPU than the small writes
    it wrapped (profiled: 9% of a small blob's Python samples). A database error is not rolled back to the
    savepoint: the batch fails as a whole (`run_batch`); a broken constraint is this write's own."""
    conn.exec_driver_sql("SAVEPOINT batch_write")
    try:
        result = work(conn)
    except BaseException as error:
        if _database_failed(error):
            raise
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT batch_write")
        conn.exec_driver_sql("RELEASE SAVEPOINT batch_write")
        raise
    conn.exec_driver_sql("RELEASE SAVEPOINT batch_write")
    return result


def stored_digest(value: str) -> Digest:
    """A digest read back from a column. Only parsed digests are ever written, so this cannot fail on the store's
    own rows; any algorithm is taken back, whether or not this registry could verify it now."""
    return parse_digest(value, verifiable=False)


# --- filters from a client's query ----------------------------------------------------------------------------------
# PostgreSQL refuses a text parameter holding NUL ("invalid byte sequence"), where SQLite compares it as any other
# character. No stored name, tag or media type holds one (their grammars forbid it), so a filter is answered the same
# on both without sending the NUL.


def matchable(text: str) -> bool:
    """Whether a stored value could equal or contain `text`: one holding NUL matches nothing."""
    return "\x00" not in text


def sort_key_before_nul(text: str) -> str:
    """`text` cut at its first NUL: for values that hold none, "sorted after" the cut is the same as after `text`
    (a value equal to the cut sorts before `text` and is not after the cut either)."""
    return text.partition("\x00")[0]


def like_pattern(search: str) -> str:
    """A substring pattern for LIKE (with `escape="\\"`), the wildcard characters of the search itself escaped."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
