"""What the registry holds and the room left for it, computed at scrape time: counts from the metadata store (one
aggregate query) and the storage volume's free space (`statvfs`), kept for a few seconds so that several
Prometheus servers, or a dashboard refreshing fast, cost one query between them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..config import StorageConfig
from ..config.values import space_floor
from ..store.facade import AsyncMetadataStore
from ..store.statistics import Inventory

log = logging.getLogger(__name__)

MAX_AGE = 5.0
"""Seconds a computed figure is served again before it is computed anew."""
FAILURE_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Disk:
    free: int
    """Bytes an unprivileged writer may still use (`f_bavail`), as `storage.minfree` counts them."""
    capacity: int
    minfree: int | None


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

    async def refresh(self) -> None:
        """Compute the figures again if they are older than MAX_AGE; a figure that cannot be had is left out of
        the scrape (the database down: no store counts, rather than stale ones or a failed scrape)."""
        async with self._lock:
            now = time.monotonic()
            if now - self._computed < MAX_AGE:
                return
            self._computed = now
            self._disk = await asyncio.to_thread(self._measure_disk) if self._directory else None
            try:
                self._inventory = await self._store.inventory()
            except Exception as exc:
                self._inventory = None
                if now - self._failure_logged >= FAILURE_LOG_INTERVAL:
                    self._failure_logged = now
                    log.warning("metrics: cannot count what the metadata store holds (logged once a minute): %s", exc)

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
