"""The metrics page of the debug listener: every worker's counts (read from the run's files), the store's
inventory and the health checks' states, in Prometheus' text format. Rendering reads files: it runs in a thread."""

from __future__ import annotations

import asyncio
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
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
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
