"""The notification queue's metrics: the notifications feature keeps plain counters per endpoint (it may not import
this feature, nor this one it), and a task copies them into the shared metrics once a second, as the cache tallies
are. `application.py` hands over a reader of those counters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from .flushing import Flushed
from .instruments import Instruments


class EndpointFigures(Protocol):
    pending: int
    delivered: int
    failures: int
    dropped: int


class QueueFigures(Protocol):
    @property
    def endpoints(self) -> Mapping[str, EndpointFigures]: ...

    @property
    def pulls_lost(self) -> int: ...


class QueueMetrics(Flushed):
    def __init__(self, read: Callable[[], QueueFigures | None], instruments: Instruments) -> None:
        self._read = read
        self._instruments = instruments
        self._flushed: dict[str, tuple[int, int, int]] = {}
        self._pulls_lost = 0

    def flush(self) -> None:
        figures = self._read()
        if figures is None:  # the notifications feature has not started yet
            return
        ins = self._instruments
        if figures.pulls_lost > self._pulls_lost:
            ins.notifications_pulls_lost.inc(figures.pulls_lost - self._pulls_lost)
            self._pulls_lost = figures.pulls_lost
        for name, endpoint in figures.endpoints.items():
            ins.notifications_pending.labels(name).set(endpoint.pending)
            now = (endpoint.delivered, endpoint.failures, endpoint.dropped)
            before = self._flushed.get(name, (0, 0, 0))
            for counter, value, old in zip(
                (ins.notifications_delivered, ins.notifications_failures, ins.notifications_dropped),
                now,
                before,
                strict=True,
            ):
                if value > old:
                    counter.labels(name).inc(value - old)
            self._flushed[name] = now
