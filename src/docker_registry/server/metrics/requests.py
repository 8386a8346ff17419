"""Requests counted once their response is sent: the count by method, route and status, the duration, and the
bytes in and out. The server calls `observe` after every response (an `http.context.Observer`), so the duration
covers a blob download to its last byte, and nothing is added to the handler's path. It is registered as a bound
method: Python calls that inline, where an instance's `__call__` goes through a C slot (~500 instructions more
per request, callgrind).

A cached manifest GET takes some tens of microseconds; four updates of prometheus_client's multiprocess values (a
lock, a memory-mapped write each) would add several. So a request only adds to plain numbers kept per series in
the worker, and `flush` hands them to the shared values once a second (and when the worker stops): a scrape lags
by at most a second.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..http.routing import ROUTE_NAME
from .flushing import Flushed
from .instruments import LATENCY_BUCKETS, Instruments
from .tallies import add_observations

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
"""Other methods count as `other`: a client may send any word, a label must stay bounded."""
UNMATCHED = "none"
"""The route label of a request that matched no route (a 404 for an unknown path)."""
BOUNDS = LATENCY_BUCKETS
"""The duration histogram's upper bounds; the last bucket (+Inf) takes the rest."""


class _Pending:
    """What one series counted since the last flush."""

    __slots__ = ("buckets", "count", "received", "sent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.total = 0.0
        self.received = 0
        self.sent = 0


@dataclass(frozen=True, slots=True)
class _Series:
    count: Any
    duration: Any
    received: Any
    sent: Any


class RequestMetrics(Flushed):
    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments
        self._pending: dict[tuple[str, str, int], _Pending] = {}
        self._series: dict[tuple[str, str, int], _Series] = {}

    def observe(self, request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
        method = request.method
        try:  # not `request.get`: a Python-level `Mapping.get` around this same lookup
            route = request[ROUTE_NAME]
        except KeyError:
            route = UNMATCHED
        key = (method if method in METHODS else "other", route, response.status)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        pending.count += 1
        pending.buckets[bisect_left(BOUNDS, duration)] += 1  # the first bound >= duration: Prometheus' `le`
        pending.total += duration
        pending.received += request.content.total_bytes
        pending.sent += response.body_length

    def flush(self) -> None:
        for key, pending in self._pending.items():
            if not pending.count:
                continue
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._bind(*key)
            # the count last: a scrape reads counters before histograms (`exposition.ReadInOrder`), so one that
            # sees a request counted also sees its duration and bytes
            add_observations(series.duration, pending.buckets, pending.total)
            if pending.received:
                series.received.inc(pending.received)
            if pending.sent:
                series.sent.inc(pending.sent)
            series.count.inc(pending.count)
            self._pending[key] = _Pending()

    def _bind(self, method: str, route: str, status: int) -> _Series:
        metrics = self._instruments
        return _Series(
            metrics.requests.labels(method, route, str(status)),
            metrics.duration.labels(method, route),
            metrics.received.labels(route),
            metrics.sent.labels(route),
        )
