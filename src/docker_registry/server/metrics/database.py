"""Metadata database statements timed, by kind, through SQLAlchemy's cursor events (they run in the reader and
writer threads): tallied, and added to the shared histogram by the worker's flush (`tallies`)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .instruments import Instruments

KINDS = ("select", "insert", "update", "delete")
_STARTED = "docker_registry.metrics.started"


def instrument_engine(engine: sa.Engine, instruments: Instruments) -> None:
    tally = instruments.query_timings
    keys = {kind: (kind,) for kind in KINDS}
    other = ("other",)
    for key in (*keys.values(), other):
        tally.bind(key)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: sa.Connection, _cursor: Any, _statement: str, *_args: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        """Only statements that succeeded: a failed one shows in the request's status and the log."""
        started = conn.info.pop(_STARTED, None)
        if started is None:
            return
        tally.observe(keys.get(statement.lstrip()[:6].lower(), other), time.perf_counter() - started)
