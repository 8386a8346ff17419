"""What the composition root wires in when an endpoint is configured: the middleware that makes each request
known to the recorder, and, per worker, the recorder (set on the registry logic) and the deliverer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..http.context import REGISTRY_KEY
from .delivery import Deliverer
from .recorder import Recorder
from .recorder import middleware as middleware
from .stats import Stats

STATS_KEY: web.AppKey[Stats] = web.AppKey("notification_stats", Stats)
"""The worker's notification counters, for metrics."""


def enabled(config: Config) -> bool:
    """Without an enabled endpoint nothing is recorded and nothing runs."""
    return bool(config.notifications.enabled)


def lifecycle(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context to append after the stores' own: it needs the registry logic they open."""
    settings = config.notifications

    async def notifications(app: web.Application) -> AsyncIterator[None]:
        logic = app[REGISTRY_KEY]
        stats = Stats.of([endpoint.name for endpoint in settings.enabled])
        app[STATS_KEY] = stats
        recorder = Recorder(settings, config.http.host_port()[1], logic.store, stats)
        logic.events = recorder
        deliverer = Deliverer(settings, logic.store.sync, stats)
        recorder.start()
        deliverer.start()
        try:
            yield
        finally:
            await deliverer.stop()
            logic.events = None
            await recorder.stop()

    return notifications
