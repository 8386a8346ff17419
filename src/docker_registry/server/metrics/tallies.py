"""Histogram observations tallied in plain numbers and added to the shared values at flush, for timings taken in
any thread (database statements run in the reader and writer threads, storage operations in the event loop and
the driver's threads).

One `observe()` of a prometheus_client histogram in multiprocess mode takes its value lock and writes the memory-
mapped file twice (the bucket and the sum): 2-5 µs, paid by every statement and storage operation of a request (a
push makes a dozen). A tally takes an uncontended lock and adds to a list, a fraction of a microsecond; the worker's
flush task (`Flushed.flushing`) hands what was tallied to the shared values once a second, as the request counts
are (`requests.py`), so a scrape lags by at most a second.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from .flushing import Flushed


def add_observations(histogram: Any, buckets: Sequence[int], total: float) -> None:
    """Add many observations to a histogram child at once: `buckets[i]` of them in bucket i (+Inf last), summing to
    `total`. prometheus_client only offers `observe()` one value at a time, so this adds to the child's bucket and
    sum values as `observe()` does (`tests/unit/test_unit_metrics.py` checks the result is the same)."""
    for value, added in zip(histogram._buckets, buckets, strict=True):
        if added:
            value.inc(added)
    histogram._sum.inc(total)


class _Series:
    __slots__ = ("buckets", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.total = 0.0


class HistogramTally(Flushed):
    """Observations of one histogram family, per series (`key`, mapped to the family's label values by `labels`)."""

    def __init__(self, histogram: Any, bounds: Sequence[float]) -> None:
        self._histogram = histogram
        self._bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, ...], _Series] = {}
        self._children: dict[tuple[str, ...], Any] = {}

    def bind(self, key: tuple[str, ...]) -> None:
        """Make the series now (at zero), so a scrape shows it before its first observation, as a child bound with
        `labels()` at start-up did."""
        if key not in self._children:
            self._children[key] = self._histogram.labels(*key)

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        """Safe from any thread."""
        index = bisect_left(self._bounds, seconds)  # the first bound >= seconds: Prometheus' `le`
        with self._lock:
            series = self._pending.get(key)
            if series is None:
                series = self._pending[key] = _Series(len(self._bounds) + 1)
            series.buckets[index] += 1
            series.total += seconds

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, series in pending.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._histogram.labels(*key)
            add_observations(child, series.buckets, series.total)
