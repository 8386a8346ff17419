"""Per-process caches of what pulls ask for most: tag targets, manifests and blob sizes per repository.

Entries are dropped as soon as any process commits a change of registry data to the metadata store (SQLite's
`data_version` tells it in microseconds, and a generation in the database header tells it from the notifications
outbox's own writes; on PostgreSQL such a write transaction sends a NOTIFY that each worker of each node listens
for: see `store.engine.signal_change`), so a pull never sees a tag or link that was moved or deleted elsewhere.
Without such a signal (PostgreSQL while the listening connection is down) `changed()` is always true and the caches
only live for the current request.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from docker_registry.core.digest import Digest

from ..store.engine import Watcher
from ..store.models import StoredManifest

K = TypeVar("K")
V = TypeVar("V")
MAX_ENTRIES = 50_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class BoundedCache(Generic[K, V]):
    """A dict that empties itself when full: cheaper than LRU bookkeeping on every hit, and hits dominate."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._data: dict[K, V] = {}
        self._max = max_entries
        self.hits = 0
        self.misses = 0
        """Look-ups since the process started, for metrics (read from time to time; counting is all `get` does)."""

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if len(self._data) >= self._max:
            self.clear()
        self._data[key] = value

    def clear(self) -> None:
        self._data.clear()


class ManifestCache(BoundedCache[tuple[str, Digest], StoredManifest]):
    """Also bounded in bytes: manifests may be up to several MiB each."""

    def __init__(self, max_bytes: int = MAX_MANIFEST_BYTES) -> None:
        super().__init__()
        self._bytes = 0
        self._max_bytes = max_bytes

    def put(self, key: tuple[str, Digest], value: StoredManifest) -> None:
        if self._bytes + len(value.content) > self._max_bytes:
            self.clear()
        super().put(key, value)
        self._bytes += len(value.content)

    def clear(self) -> None:
        super().clear()
        self._bytes = 0


class RegistryCache:
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher
        self.generation = 0
        self._fresh = False
        self.tags: BoundedCache[tuple[str, str], Digest] = BoundedCache()
        """(repository, tag) to the manifest's digest."""
        self.manifests = ManifestCache()
        """(repository, manifest digest) to the manifest."""
        self.blobs: BoundedCache[tuple[str, Digest], int] = BoundedCache()
        """(repository, blob digest) to the blob's size."""
        self.missing: BoundedCache[tuple[str, Digest], bool] = BoundedCache()
        """(repository, digest) that is neither a blob nor a manifest of the repository: a client HEADs each layer
        it is about to push, skopeo twice, and only the push that follows (a commit, which clears this) changes
        the answer."""

    def refresh(self) -> int:
        """Forget everything if the database changed since the last look; call before reading the caches.

        Returns the cache generation: a value read from the database may be cached only if the generation is
        still the same once the read is done, else it may predate a commit another request already saw.
        """
        if self._fresh:
            return self.generation
        if self._watcher.changed():
            self.clear()
        if self._watcher.reliable:
            self._hold_until_next_iteration()
        return self.generation

    def _hold_until_next_iteration(self) -> None:
        """Skip further checks until the event loop's next iteration.

        Every request whose handler runs in this iteration was received in an earlier one, so before this check:
        anything committed before such a request was sent is already visible, and the answer holds for all of them.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._fresh = True
        loop.call_soon(self._expire)

    def _expire(self) -> None:
        self._fresh = False

    def clear(self) -> None:
        self.generation += 1
        self.tags.clear()
        self.manifests.clear()
        self.blobs.clear()
        self.missing.clear()
