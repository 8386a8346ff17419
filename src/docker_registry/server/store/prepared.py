"""Hot statements compiled once to their SQL text and run as such on SQLite.

A statement built once with `bindparam()`s still costs SQLAlchemy a cache look-up, parameter processing and an
execution context per call: about 20 µs, several times what SQLite takes to run a one-row UPDATE, and a small
blob's writes run a dozen of them. `Prepared.run` compiles the statement for the connection's dialect on first use
and then runs its SQL text with the parameters in their order on the sqlite3 cursor itself (`run_on_cursor`: about
4.5 µs with the engine's cursor events fired, where `exec_driver_sql`, SQLAlchemy's execution context around the
same cursor call, took about 10), answering with the little of a result the store asks for (`scalar`,
`scalar_one`, `first`, `rowcount`, `mappings().first()`). A statement that fails there is handed to SQLAlchemy's
own error handling, so callers see the same exceptions (`OperationalError` for a locked database, which the
writes retry) and a broken connection is invalidated as before.

Only for statements whose parameters and result columns SQLAlchemy does not convert on SQLite (integers, strings,
floats, bytes) and that have no expanding `IN` (whose text depends on the values); other databases run the
statement object as before.
"""

from __future__ import annotations

import operator
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa


class Result(Protocol):
    """What the store reads of a statement's result: SQLAlchemy's `CursorResult`, or `_CursorResult` on SQLite."""

    @property
    def rowcount(self) -> int: ...

    def scalar(self) -> Any: ...

    def scalar_one(self) -> Any: ...

    def first(self) -> Any: ...

    def mappings(self) -> Any: ...


class Prepared:
    __slots__ = ("_row", "_sqlite", "statement")

    def __init__(self, statement: sa.Executable | Mapping[str, sa.Executable]) -> None:
        self.statement = statement
        """One statement, or one per dialect name (`base.per_dialect`)."""
        self._sqlite: tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] | None = None
        self._row: type | None = None
        """The named tuple of the statement's result rows on SQLite (made at the first `first()`)."""

    def for_dialect(self, dialect: str) -> sa.Executable:
        """The statement run on `dialect`."""
        return self.statement[dialect] if isinstance(self.statement, Mapping) else self.statement

    def run(self, conn: sa.Connection, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Result:
        """Execute with `params` (a list of them: executemany)."""
        dialect = conn.dialect.name
        if dialect != "sqlite":
            return conn.execute(self.for_dialect(dialect), params)
        if self._sqlite is None:
            self._sqlite = _compile(self.for_dialect(dialect), conn.dialect)
        sql, ordered = self._sqlite
        args = ordered(params) if isinstance(params, Mapping) else [ordered(p) for p in params]
        if not conn.in_transaction():
            return conn.exec_driver_sql(sql, args)  # SQLAlchemy begins the transaction (a read's first statement)
        return _CursorResult(self, run_on_cursor(conn, sql, args))

    def row_type(self, cursor: sqlite3.Cursor) -> type:
        """Rows with the statement's column names as attributes (`row.size`), as SQLAlchemy's rows have."""
        if self._row is None:
            self._row = namedtuple("Row", [column[0] for column in cursor.description], rename=True)  # type: ignore[misc]
        return self._row


def run_on_cursor(conn: sa.Connection, sql: str, args: tuple[Any, ...] | list[tuple[Any, ...]] = ()) -> sqlite3.Cursor:
    """Run `sql` on the connection's sqlite3 cursor (SQLite only; inside a transaction SQLAlchemy began, or as
    the `begin` event's BEGIN), firing the engine's cursor events around it (the database metrics time statements
    with them), with SQLAlchemy's error handling: what `exec_driver_sql` does, for half its CPU."""
    many = isinstance(args, list)
    dbapi = conn.connection.dbapi_connection
    assert isinstance(dbapi, sqlite3.Connection)  # a connection in a transaction is open
    cursor = dbapi.cursor()
    dispatch = conn.dispatch
    for before in dispatch.before_cursor_execute:
        before(conn, cursor, sql, args, None, many)
    try:
        if many:
            cursor.executemany(sql, args)
        else:
            cursor.execute(sql, args)
    except sqlite3.Error as error:
        cursor.close()
        # raises SQLAlchemy's exception for it, after the engine's `handle_error` hooks and invalidating a broken
        # connection: what `exec_driver_sql` would have done
        conn._handle_dbapi_exception(error, sql, args, cursor, None)
    for after in dispatch.after_cursor_execute:
        after(conn, cursor, sql, args, None, many)
    return cursor


class _CursorResult:
    """The part of a result the store reads, straight from the sqlite3 cursor."""

    __slots__ = ("_cursor", "_prepared")

    def __init__(self, prepared: Prepared, cursor: sqlite3.Cursor) -> None:
        self._prepared, self._cursor = prepared, cursor

    @property
    def rowcount(self) -> int:
        count = self._cursor.rowcount
        self._cursor.close()
        return count

    def _one_row(self) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._cursor.fetchone()
            return row
        finally:
            self._cursor.close()

    def scalar(self) -> Any:
        row = self._one_row()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        try:
            rows = self._cursor.fetchmany(2)
        finally:
            self._cursor.close()
        if len(rows) != 1:
            raise sa.exc.NoResultFound("no row") if not rows else sa.exc.MultipleResultsFound("more than one row")
        return rows[0][0]

    def first(self) -> Any:
        row_type = self._prepared.row_type(self._cursor)
        row = self._one_row()
        return None if row is None else row_type(*row)

    def mappings(self) -> _Mappings:
        return _Mappings(self)


class _Mappings:
    __slots__ = ("_result",)

    def __init__(self, result: _CursorResult) -> None:
        self._result = result

    def first(self) -> Mapping[str, Any] | None:
        row = self._result.first()
        return None if row is None else row._asdict()


def _orderer(names: tuple[str, ...], fixed: dict[str, Any]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The statement's positional parameters taken from a mapping, in order, a value the caller gives winning over
    one the statement fixes: by `itemgetter` (0.2 µs for seven, where a generator took 1.3)."""
    if not names:
        return lambda params: ()
    get = operator.itemgetter(*names)
    if len(names) == 1:
        return (lambda params: (get({**fixed, **params}),)) if fixed else (lambda params: (get(params),))
    return (lambda params: get({**fixed, **params})) if fixed else get


def _compile(
    statement: sa.Executable, dialect: sa.Dialect
) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    """The SQL text, and what puts a call's parameters in their positional order, with the values of those the
    statement fixes itself (`.values(size=0)`)."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if not compiled.positional or compiled.positiontup is None:
        raise ValueError("Prepared expects SQLite's positional parameters")
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("Prepared cannot run a statement with an expanding IN")
    fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    return str(compiled), _orderer(tuple(compiled.positiontup), fixed)
