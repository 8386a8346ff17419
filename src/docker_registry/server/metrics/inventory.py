"""What the registry holds and the room left for it, computed at scrape time: counts from the metadata store (one
aggregate query) and the storage volume's free space (`statvfs`), kept for a few seconds so that several
Prometheus servers, or a dashboard refreshing fast, cost one query between them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..config import StorageConfig
from ..config.values import space_floor
from ..store.facade import AsyncMetadataStore
from ..store.statistics import Inventory

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_AGE = 5.0
"""Seconds a computed figure is served again before it is computed anew."""
PATIENCE = 3.0
"""Seconds a scrape waits for a figure: a database or volume that stopped answering (a PostgreSQL server frozen or
cut off, a hung NFS mount) leaves its figures out instead of holding the scrape past Prometheus' timeout (10 s by
default), which failed the whole scrape: the request counts and `registry_health_check_up` went with it."""
FAILURE_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Disk:
    free: int
    """Bytes an unprivileged writer may still use (`f_bavail`), as `storage.minfree` counts them."""
    capacity: int
    minfree: int | None


class _Slow(Generic[T]):
    """A figure computed in the background, one computation at a time however long one hangs (a new one every few
    seconds would take a thread each, all stuck). A scrape waits `PATIENCE` for it; one that finished after a scrape
    stopped waiting is what the next scrape gets (a count slower than `PATIENCE`, say on a large database, was thrown
    away and started again at every scrape, so its figures never showed)."""

    def __init__(self, compute: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._compute = compute
        self._running: asyncio.Task[T] | None = None
        self._taken = True
        """Whether a scrape got the running computation's outcome: then the next one starts a new computation."""

    async def get(self) -> T:
        """The computation's result (or its error); TimeoutError while it runs past `PATIENCE`."""
        if self._running is None or (self._running.done() and self._taken):
            self._running = asyncio.ensure_future(self._compute())
            # its error, should no scrape come to take it, is not reported as never retrieved
            self._running.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._taken = False
        running = self._running
        done, _ = await asyncio.wait({running}, timeout=PATIENCE)  # the computation goes on past the timeout
        if not done:
            raise TimeoutError
        self._taken = True
        return running.result()


class InventoryCollector(Collector):
    def __init__(self, store: AsyncMetadataStore, storage: StorageConfig) -> None:
        self._store = store
        self._directory = str(storage.options["rootdirectory"]) if storage.driver == "filesystem" else None
        self._minfree = storage.minfree
        self._inventory: Inventory | None = None
        self._disk: Disk | None = None
        self._computed = -MAX_AGE
        self._failure_logged = -FAILURE_LOG_INTERVAL
        self._lock = asyncio.Lock()
        self._counting = _Slow(store.inventory)
        self._measuring = _Slow(lambda: asyncio.to_thread(self._measure_disk))

    async def refresh(self) -> None:
        """Compute the figures again if they are older than MAX_AGE; a figure that cannot be had within PATIENCE
        is left out of the scrape (the database down or not answering: no store counts, rather than stale ones or
        a failed scrape)."""
        async with self._lock:
            now = time.monotonic()
            if now - self._computed < MAX_AGE:
                return
            self._computed = now
            if self._directory:
                try:
                    self._disk = await self._measuring.get()
                except TimeoutError:
                    self._disk = None
            try:
                self._inventory = await self._counting.get()
            except Exception as exc:
                self._inventory = None
                if now - self._failure_logged >= FAILURE_LOG_INTERVAL:
                    self._failure_logged = now
                    reason = f"no answer in {PATIENCE:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
                    log.warning("metrics: cannot count what the metadata store holds (once a minute): %s", reason)

    def _measure_disk(self) -> Disk | None:
        assert self._directory is not None
        try:
            disk = os.statvfs(self._directory)
        except OSError:
            return None
        capacity = disk.f_blocks * disk.f_frsize
        minfree = None if self._minfree is None else space_floor(self._minfree, capacity)
        return Disk(disk.f_bavail * disk.f_frsize, capacity, minfree)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        inventory = self._inventory
        if inventory is not None:
            yield GaugeMetricFamily("registry_repositories", "Repositories", value=inventory.repositories)
            yield GaugeMetricFamily(
                "registry_manifests", "Manifests, counted once per repository holding them", value=inventory.manifests
            )
            yield GaugeMetricFamily("registry_blobs", "Distinct blobs stored", value=inventory.blobs)
            yield GaugeMetricFamily(
                "registry_blobs_bytes", "Bytes of the distinct blobs stored", value=inventory.blob_bytes
            )
            yield GaugeMetricFamily(
                "registry_upload_sessions", "Uploads begun and not yet finished or cancelled", value=inventory.uploads
            )
        disk = self._disk
        if disk is not None:
            yield GaugeMetricFamily(
                "registry_storage_free_bytes", "Free bytes on the storage volume (for the registry)", value=disk.free
            )
            yield GaugeMetricFamily(
                "registry_storage_capacity_bytes", "Size of the storage volume in bytes", value=disk.capacity
            )
            if disk.minfree is not None:
                yield GaugeMetricFamily(
                    "registry_storage_minfree_bytes",
                    "storage.minfree in bytes: below it new uploads answer 507",
                    value=disk.minfree,
                )
