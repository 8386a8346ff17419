"""The metrics page of the debug listener: every worker's counts (read from the run's files), the store's
inventory and the health checks' states, in Prometheus' text format. Rendering reads files: it runs in a thread."""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .inventory import InventoryCollector

HealthStates = Callable[[], Mapping[str, bool]]
"""Each health check's name and whether it passes now (given by the composition root: features stay apart)."""


class _HealthCollector(Collector):
    def __init__(self, states: HealthStates) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "registry_health_check_up",
            "1 while the health check passes, 0 once it failed `threshold` times",
            labels=["check"],
        )
        for name, passing in self._states().items():
            family.add_metric([name], 1.0 if passing else 0.0)
        yield family


class ReadInOrder(MultiProcessCollector):
    """Reads every process's counter files before its histogram files. A scrape is not one atomic read: a worker
    may flush between two files. Workers flush timings before counts (`FlushedTogether`, and `RequestMetrics`
    writes a request's count after its duration), so reading in the opposite order means a count seen was flushed
    after the timings read next: the duration histogram never shows fewer requests than the request counter (in
    glob's arbitrary order a scrape in CI saw 17 timed GETs beside 35 counted)."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path=path)  # type: ignore[no-untyped-call]
        self._directory = path

    def collect(self) -> Iterable[Metric]:
        files = sorted(filter(_begun, glob.glob(os.path.join(self._directory, "*.db"))), key=_read_before_histograms)
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return,no-untyped-call]


def _read_before_histograms(path: str) -> tuple[bool, str]:
    return os.path.basename(path).startswith("histogram_"), path


def _begun(path: str) -> bool:
    """Whether a process's file holds anything yet: one is created empty and then sized, and a scrape between the
    two failed reading it (a scrape in CI, during a worker's first flush)."""
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # removed since the listing: the process ended
        return False


class _InventoryOf(Collector):
    def __init__(self, inventory: Callable[[], InventoryCollector | None]) -> None:
        self._inventory = inventory

    def collect(self) -> Iterable[Metric]:
        inventory = self._inventory()
        return () if inventory is None else inventory.collect()


def metrics_handler(
    directory: str, inventory: Callable[[], InventoryCollector | None], health: HealthStates
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`inventory` gives the worker's inventory once its stores are open (None before)."""
    registry = CollectorRegistry()
    ReadInOrder(registry, directory)
    registry.register(_InventoryOf(inventory))
    registry.register(_HealthCollector(health))

    async def metrics(_request: web.Request) -> web.Response:
        current = inventory()
        if current is not None:
            await current.refresh()
        body = await asyncio.to_thread(generate_latest, registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return metrics
