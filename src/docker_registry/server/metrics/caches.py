"""Cache hits and misses: the caches tally them in plain integers (a cache hit is the fastest request there is, and
stays so), and this task adds what they counted to the shared counters once a second."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry.cache import BoundedCache
from .flushing import Flushed
from .instruments import Instruments


class CacheMetrics(Flushed):
    def __init__(self, caches: Mapping[str, BoundedCache[Any, Any]], instruments: Instruments) -> None:
        self._caches = dict(caches)
        self._series: dict[str, tuple[Any, Any]] = {
            name: (instruments.cache.labels(name, "hit"), instruments.cache.labels(name, "miss")) for name in caches
        }
        self._flushed = {name: (0, 0) for name in caches}

    def flush(self) -> None:
        for name, cache in self._caches.items():
            hits, misses = cache.hits, cache.misses
            flushed_hits, flushed_misses = self._flushed[name]
            hit_series, miss_series = self._series[name]
            if hits > flushed_hits:
                hit_series.inc(hits - flushed_hits)
            if misses > flushed_misses:
                miss_series.inc(misses - flushed_misses)
            self._flushed[name] = (hits, misses)
