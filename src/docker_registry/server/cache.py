"""Per-process caches of what pulls ask for most: tag targets, manifests and blob sizes per repository.

Entries are dropped as soon as any process commits to the metadata store (SQLite's `data_version` tells it in
microseconds), so a pull never sees a tag or link that was moved or deleted elsewhere. Without such a signal
(PostgreSQL) `changed()` is always true and the caches only live for the current request.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .store.engine import ChangeWatcher
from .store.metadata import StoredManifest

K = TypeVar("K")
V = TypeVar("V")
MAX_ENTRIES = 50_000


class BoundedCache(Generic[K, V]):
    """A dict that empties itself when full: cheaper than LRU bookkeeping on every hit, and hits dominate."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._data: dict[K, V] = {}
        self._max = max_entries

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._data) >= self._max:
            self._data.clear()
        self._data[key] = value

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class RegistryCache:
    def __init__(self, watcher: ChangeWatcher) -> None:
        self._watcher = watcher
        self.tags: BoundedCache[tuple[str, str], str] = BoundedCache()
        self.manifests: BoundedCache[tuple[str, str], StoredManifest] = BoundedCache()
        self.blobs: BoundedCache[tuple[str, str], int] = BoundedCache()

    def refresh(self) -> None:
        """Forget everything if the database changed since the last look; call before reading the caches."""
        if self._watcher.changed():
            self.clear()

    def clear(self) -> None:
        self.tags.clear()
        self.manifests.clear()
        self.blobs.clear()
