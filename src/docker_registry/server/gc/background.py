"""Garbage collection and upload purging inside the server: every worker of every node schedules them, and a
lease in the metadata database lets one at a time do the work, so two nodes never collect at once and a crashed
collector's turn passes to another once its lease runs out."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from docker_registry.core.driver import Base

from ..config import Config
from ..registry.process_identity import is_dead
from ..store.collection import CollectionQueries
from ..store.models import COLLECTION_LEASE
from .cached import cached_scopes
from .collector import Busy, Collector, Options
from .progress import LogProgress
from .summary import Summary

log = logging.getLogger("docker_registry.gc")
SCHEDULE_LEASE = "gc-schedule"
"""Held for an interval by the process whose turn it was, so the workers of all nodes collect once an interval
between them; the collection itself runs under the collector's lease, which a one-off command shares."""
UPLOAD_LEASE = "uploadpurging"
MIN_INTERVAL = 1.0
"""An interval of `0s` would collect in a loop: once a second is the most often either job runs."""
ABANDONED_CHECK_AFTER = 1.0
"""Seconds after start (up to twice that, spreading the workers) before looking for a dead collection's leftovers."""
ABANDONED_CHECK_EVERY = 5.0
"""Seconds (on average; spread as above) between later looks: a `garbage-collect` killed while the server runs, or a
collecting node that died, leaves blobs that uploads are refused until someone finishes them. One look is two
reads (an index that holds only blobs being deleted, migration 0027, and the collection's lease)."""


def holder_name() -> str:
    """Who holds a lease: host and process, plus a random part so a restarted process is someone else."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Maintenance:
    """The periodic jobs of one worker; `start` them with the app, `stop` them at shutdown."""

    def __init__(self, config: Config, store: CollectionQueries, driver: Base) -> None:
        self._config = config
        self._store = store
        self._holder = holder_name()
        self._collector = Collector(store, driver, self._holder, LogProgress(log, logging.DEBUG))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        gc = self._config.gc
        purging = self._config.storage.maintenance.uploadpurging
        if not self._config.storage.readonly:  # a read-only registry deletes nothing
            self._tasks.append(asyncio.ensure_future(self._finish_abandoned()))
        if gc.enabled:
            self._tasks.append(asyncio.ensure_future(self._every(gc.interval, self._collect)))
        if purging.enabled:
            self._tasks.append(asyncio.ensure_future(self._every(purging.interval, self._purge_uploads)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        interval = max(interval, MIN_INTERVAL)
        # Workers start together: a random first wait spreads their attempts over the interval.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is unreachable now, or storage failed: the next round tries again
                log.exception("garbage collection failed; trying again in %s s", interval)
            await asyncio.sleep(interval)

    async def _finish_abandoned(self) -> None:
        """A moment after start (a worker restarted after one was killed collecting), then every few seconds (a
        `garbage-collect` or another node killed collecting while this one serves): finish the blob deletions a dead
        collection left, rather than let uploads of those blobs be refused until the next collection."""
        await asyncio.sleep(random.uniform(ABANDONED_CHECK_AFTER, 2 * ABANDONED_CHECK_AFTER))
        failing = False
        while True:
            try:
                if await asyncio.to_thread(self._store.deletions_abandoned, COLLECTION_LEASE, is_dead):
                    _log_summary("blob deletions a stopped collection left", await self._collector.finish_abandoned())
                failing = False
            except Busy:
                pass  # a live collection finishes them
            except Exception:  # the database or storage is away: the next look tries again
                if not failing:
                    log.warning("could not finish the blob deletions a collection left", exc_info=True)
                failing = True
            await asyncio.sleep(random.uniform(0.5, 1.5) * ABANDONED_CHECK_EVERY)

    async def _collect(self) -> None:
        gc = self._config.gc
        if not await asyncio.to_thread(self._store.acquire_lease, SCHEDULE_LEASE, self._holder, gc.interval):
            return  # another worker or node collected within the interval
        try:
            options = Options(delay=gc.delay, delete_untagged=gc.deleteuntagged, cached=cached_scopes(self._config))
            summary = await self._collector.run(options)
        except Busy:
            return  # another worker or node collects now
        _log_summary("garbage collection", summary)

    async def _purge_uploads(self) -> None:
        purging = self._config.storage.maintenance.uploadpurging
        store = self._store
        if not await asyncio.to_thread(store.acquire_lease, UPLOAD_LEASE, self._holder, purging.interval):
            return  # another worker or node purged within the interval
        # the lease is kept until it runs out: no other process purges again before the interval has passed
        summary = Summary(dry_run=purging.dryrun)
        began = time.monotonic()
        await self._collector.purge_uploads(time.time() - purging.age, purging.dryrun, summary)
        summary.seconds = time.monotonic() - began
        _log_summary("upload purging", summary)


def _log_summary(what: str, summary: Summary) -> None:
    deleted = sum(summary.deleted.values())
    level = logging.INFO if deleted else logging.DEBUG
    log.log(level, "%s: %s", what, summary.text().replace("\n", "; "))
