"""The storage driver contract: every backend the registry stores in implements `Base`.

Method names and meanings follow the original docker-registry-core (`get_content`, `put_content`,
`stream_read`, `stream_write`, `list_directory`, `exists`, `remove`, `get_size`, `content_redirect_url`), made
async because the server runs on asyncio, plus what a modern registry needs (`stat`, `move`, `walk`, resumable
writers for chunked uploads, `local_path` for sendfile).

Rules every driver follows (the suite in `docker_registry.testing` checks them):
- Paths are relative and slash-separated; anything that could leave the root is refused with
  `WrongArgumentsError` (see `paths.check_path`) before any backend is touched.
- Content is bytes in and bytes out; drivers never decode.
- A missing object raises `exceptions.FileNotFoundError` from every read, size, stat and remove.
- `put_content` and `stream_write` are atomic: a reader sees the old object, the new one, or nothing, never a mix.
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import pkgutil
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import exceptions
from .paths import check_path

__all__ = ["CHUNK_SIZE", "ENTRY_POINT_GROUP", "Base", "Stat", "Writer", "available", "fetch"]

ENTRY_POINT_GROUP = "docker_registry.drivers"
CHUNK_SIZE = 64 * 1024
"""Read and write granularity: 64 KiB slices hashed and written fastest in measurements on this kind of machine."""


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    mtime: float
    """Seconds since the epoch of the last modification."""


class Writer(abc.ABC):
    """An object being written across several calls, maybe several requests or processes (chunked uploads).

    Content written is appended under `path` itself, so a later `Base.writer(path, append=True)` (in the same
    process or another) continues where this one stopped. `commit` makes the content durable; `move` then
    publishes it atomically under its final name.
    """

    path: str

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the object so far, including those present when it was opened for append."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> int:
        """Append `data`; return the number of bytes written."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release resources; the content stays, to be continued by a later writer."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Flush and make durable (fsync on a filesystem); closes the writer."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Discard everything under `path` and close."""

    async def __aenter__(self) -> Writer:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()


class Base(abc.ABC):
    """Base class of every storage driver. `options` is the driver's own section of the configuration."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    # --- the original's methods -------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_content(self, path: str) -> bytes:
        """Whole object as bytes; for small objects only."""

    @abc.abstractmethod
    async def put_content(self, path: str, data: bytes) -> None:
        """Store `data` under `path` atomically, replacing any previous object."""

    @abc.abstractmethod
    def stream_read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Async iterator over chunks of the object from `offset`, `length` bytes at most (None: to the end).

        Implemented as an async generator; a missing object raises `FileNotFoundError` at the first iteration.
        """

    @abc.abstractmethod
    async def stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        """Store what `chunks` yields under `path` atomically; return the number of bytes written."""

    @abc.abstractmethod
    async def list_directory(self, path: str = "") -> list[str]:
        """Immediate children of a directory, as full relative paths, sorted.

        Raises `FileNotFoundError` when nothing exists below `path` (and for a path that is an object).
        """

    @abc.abstractmethod
    async def exists(self, path: str) -> bool:
        """True if an object or a non-empty directory exists at `path`."""

    @abc.abstractmethod
    async def remove(self, path: str) -> None:
        """Remove an object, or every object under a directory prefix."""

    async def get_size(self, path: str) -> int:
        return (await self.stat(path)).size

    async def content_redirect_url(self, path: str) -> str | None:
        """A URL clients may fetch the object from directly (a presigned URL), or None to be served by us."""
        check_path(path)
        return None

    # --- what a modern registry needs --------------------------------------------------------------------
    @abc.abstractmethod
    async def stat(self, path: str) -> Stat:
        """Size and modification time of an object."""

    @abc.abstractmethod
    async def move(self, src: str, dst: str) -> None:
        """Move an object, replacing `dst`; atomic where the backend allows (a rename on a filesystem)."""

    @abc.abstractmethod
    def walk(self, prefix: str = "") -> AsyncIterator[str]:
        """Every object (not directory) under `prefix`, as full relative paths, in no guaranteed order."""

    @abc.abstractmethod
    async def writer(self, path: str, append: bool = False) -> Writer:
        """Open `path` for writing: truncated, or continued at its end with `append=True`."""

    def local_path(self, path: str) -> str | None:
        """A filesystem path the server may `sendfile` from, or None when the backend is not a local disk."""
        check_path(path)
        return None

    async def close(self) -> None:
        """Release connections and other resources; nothing to release by default."""
        return None


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every installed driver: entry points, and modules under `docker_registry.drivers`."""
    names = set(_entry_points())
    try:
        drivers_pkg = importlib.import_module("docker_registry.drivers")
        names.update(m.name for m in pkgutil.iter_modules(drivers_pkg.__path__))
    except ImportError:
        pass
    return sorted(names)


def fetch(name: str) -> type[Base]:
    """The driver class for `name`: from the entry-point group, else the module `docker_registry.drivers.<name>`.

    A module found by name must define a class `Driver`, as drivers of the original registry had to.
    """
    ep = _entry_points().get(name)
    if ep is not None:
        cls = ep.load()
    else:
        if not name or not name.replace("_", "").isalnum():
            raise exceptions.NotImplementedError(f"no driver named {name!r}; available: {', '.join(available())}")
        try:
            module = importlib.import_module(f"docker_registry.drivers.{name}")
        except ModuleNotFoundError as e:
            if e.name not in (f"docker_registry.drivers.{name}", "docker_registry.drivers", "docker_registry"):
                raise
            raise exceptions.NotImplementedError(
                f"no driver named {name!r}; available: {', '.join(available())}"
            ) from None
        cls = getattr(module, "Driver", None)
    if not (isinstance(cls, type) and issubclass(cls, Base)):
        raise exceptions.NotImplementedError(f"driver {name!r} does not provide a docker_registry.core.driver.Base")
    return cls
