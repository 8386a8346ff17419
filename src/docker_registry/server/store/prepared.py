"""Hot statements compiled once to their SQL text and run as such on SQLite.

A statement built once with `bindparam()`s still costs SQLAlchemy a cache look-up, parameter processing and an
execution context per call: about 20 µs, several times what SQLite takes to run a one-row UPDATE, and a small
blob's writes run a dozen of them. `Prepared.run` compiles the statement for the connection's dialect on first use
and then hands its SQL text and the parameters in their order straight to `exec_driver_sql` (about 9 µs), which
still fires the engine's events and returns an ordinary result (`scalar`, `first`, `rowcount`, `mappings`).

Only for statements whose parameters and result columns SQLAlchemy does not convert on SQLite (integers, strings,
floats, bytes) and that have no expanding `IN` (whose text depends on the values); other databases run the
statement object as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa


class Prepared:
    __slots__ = ("_sqlite", "statement")

    def __init__(self, statement: sa.Executable | Mapping[str, sa.Executable]) -> None:
        self.statement = statement
        """One statement, or one per dialect name (`base.per_dialect`)."""
        self._sqlite: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def for_dialect(self, dialect: str) -> sa.Executable:
        """The statement run on `dialect`."""
        return self.statement[dialect] if isinstance(self.statement, Mapping) else self.statement

    def run(self, conn: sa.Connection, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> sa.CursorResult[Any]:
        """Execute with `params` (a list of them: executemany)."""
        dialect = conn.dialect.name
        if dialect != "sqlite":
            return conn.execute(self.for_dialect(dialect), params)
        if self._sqlite is None:
            self._sqlite = _compile(self.for_dialect(dialect), conn.dialect)
        sql, names, fixed = self._sqlite
        if isinstance(params, Mapping):
            return conn.exec_driver_sql(sql, _ordered(names, fixed, params))
        return conn.exec_driver_sql(sql, [_ordered(names, fixed, p) for p in params])


def _ordered(names: tuple[str, ...], fixed: dict[str, Any], params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(params[name] if name in params else fixed[name] for name in names)


def _compile(statement: sa.Executable, dialect: sa.Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The SQL text, the names of its positional parameters in order, and the values of those the statement
    fixes itself (`.values(size=0)`)."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if not compiled.positional or compiled.positiontup is None:
        raise ValueError("Prepared expects SQLite's positional parameters")
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("Prepared cannot run a statement with an expanding IN")
    fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    return str(compiled), tuple(compiled.positiontup), fixed
