"""Requests counted once their response is sent: the count by method, route and status, the duration, and the
bytes in and out. Called by the server after every response (an `http.context.Observer`), so the duration covers a
blob download to its last byte, and nothing is added to the handler's path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..http.routing import ROUTE_NAME
from .instruments import Instruments

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
"""Other methods count as `other`: a client may send any word, a label must stay bounded."""
UNMATCHED = "none"
"""The route label of a request that matched no route (a 404 for an unknown path)."""


@dataclass(frozen=True, slots=True)
class _Series:
    count: Any
    duration: Any
    received: Any
    sent: Any


class RequestMetrics:
    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments
        self._series: dict[tuple[str, str, int], _Series] = {}
        """Label children by (method, route, status): `labels()` costs more than the increment itself."""

    def __call__(self, request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
        method = request.method
        key = (method if method in METHODS else "other", request.get(ROUTE_NAME, UNMATCHED), response.status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._bind(*key)
        series.count.inc()
        series.duration.observe(duration)
        received = request.content.total_bytes
        if received:
            series.received.inc(received)
        sent = response.body_length
        if sent:
            series.sent.inc(sent)

    def _bind(self, method: str, route: str, status: int) -> _Series:
        metrics = self._instruments
        return _Series(
            metrics.requests.labels(method, route, str(status)),
            metrics.duration.labels(method, route),
            metrics.received.labels(route),
            metrics.sent.labels(route),
        )
