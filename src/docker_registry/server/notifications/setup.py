"""What the composition root wires in when an endpoint is configured: per worker, the recorder (set on the registry
logic; it finds each request through `http.context.SERVING`) and, when the worker delivers too (one worker serving
in-process), the deliverer; and the delivery process's deliverer (`delivering`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..http.context import REGISTRY_KEY
from ..store.metadata import MetadataStore
from .delivery import Deliverer
from .recorder import Recorder
from .stats import Stats

STATS_KEY: web.AppKey[Stats] = web.AppKey("notification_stats", Stats)
"""The worker's notification counters, for metrics."""


def enabled(config: Config) -> bool:
    """Without an enabled endpoint nothing is recorded and nothing runs."""
    return bool(config.notifications.enabled)


def in_own_process(config: Config) -> bool:
    """True when the delivery process delivers (an endpoint enabled, more than one worker): the workers then only
    record. With one worker the registry is a single process, which delivers too."""
    return enabled(config) and config.http.worker_count > 1


def _stats(config: Config) -> Stats:
    return Stats.of([endpoint.name for endpoint in config.notifications.enabled])


def lifecycle(config: Config, delivers: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context to append after the stores' own: it needs the registry logic they open. `delivers`: this
    worker also delivers (competing for the lease), else it only records and the delivery process delivers."""
    settings = config.notifications

    async def notifications(app: web.Application) -> AsyncIterator[None]:
        logic = app[REGISTRY_KEY]
        stats = app[STATS_KEY] = _stats(config)
        recorder = Recorder(settings, config.http.host_port()[1], logic.store, stats)
        logic.events = recorder
        deliverer = Deliverer(settings, logic.store.sync, stats) if delivers else None
        recorder.start()
        if deliverer is not None:
            deliverer.start()
        try:
            yield
        finally:
            if deliverer is not None:
                await deliverer.stop()
            logic.events = None
            await recorder.stop()

    return notifications


@contextlib.asynccontextmanager
async def delivering(config: Config, store: MetadataStore) -> AsyncIterator[Stats]:
    """The delivery process's one job: compete for the lease and, holding it, deliver, until the block ends (the
    lease then given up). Yields its counters, for metrics."""
    stats = _stats(config)
    deliverer = Deliverer(config.notifications, store, stats)
    deliverer.start()
    try:
        yield stats
    finally:
        await deliverer.stop()
