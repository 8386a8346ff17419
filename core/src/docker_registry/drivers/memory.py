"""The in-memory driver: objects in a dict of one process, for tests and throw-away registries.

Same semantics as the filesystem driver, minus durability: a whole-object write is stored only once every
chunk has arrived, so readers never see part of it; directories exist only as prefixes of object keys. Each
instance has its own store, lost when the process ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from docker_registry.core import exceptions
from docker_registry.core.driver import Base, Stat, Writer
from docker_registry.core.paths import immediate_children

__all__ = ["Driver"]

READ_SLICE = 1024 * 1024


class _Object:
    __slots__ = ("data", "mtime")

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = bytearray(data)
        self.mtime = time.time()


class Driver(Base):
    """Keeps every object in memory; takes no options."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._objects: dict[str, _Object] = {}

    def _object(self, path: str) -> _Object:
        obj = self._objects.get(path)
        if obj is None:
            raise exceptions.FileNotFoundError(f"{path!r} does not exist")
        return obj

    def _under(self, prefix: str) -> list[str]:
        start = f"{prefix}/" if prefix else ""
        return [key for key in self._objects if key.startswith(start)]

    async def _get_content(self, path: str) -> bytes:
        return bytes(self._object(path).data)

    async def _read_unfinished(self, path: str, limit: int) -> bytes | None:
        obj = self._objects.get(path)  # a writer appends into the stored object: readable at once
        return bytes(obj.data) if obj is not None and 0 < len(obj.data) <= limit else None

    async def _put_content(self, path: str, data: bytes) -> None:
        self._objects[path] = _Object(data)

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        data = self._object(path).data
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, READ_SLICE):
            # The view is released before yielding: a live export would stop a writer from growing the object.
            with memoryview(data) as view:
                chunk = bytes(view[start : min(start + READ_SLICE, end)])
            yield chunk

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        buffer = bytearray()
        async for chunk in chunks:
            buffer += chunk
        self._objects[path] = _Object(buffer)
        return len(buffer)

    async def _list_directory(self, prefix: str) -> list[str]:
        children = immediate_children(self._objects, prefix)
        if not children:
            raise exceptions.FileNotFoundError(f"no directory {prefix!r}")
        return children

    async def _exists(self, path: str) -> bool:
        return path in self._objects or bool(self._under(path))

    async def _remove(self, path: str) -> None:
        doomed = self._under(path)
        if path in self._objects:
            doomed.append(path)
        if not doomed:
            raise exceptions.FileNotFoundError(f"{path!r} does not exist")
        for key in doomed:
            del self._objects[key]

    async def _stat(self, path: str) -> Stat:
        obj = self._object(path)
        return Stat(size=len(obj.data), mtime=obj.mtime)

    async def _move(self, src: str, dst: str) -> None:
        obj = self._object(src)
        self._objects[dst] = self._objects.pop(src)
        obj.mtime = time.time()

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        for key in self._under(prefix):
            yield key

    async def _writer(self, path: str, append: bool) -> Writer:
        if append:
            obj = self._object(path)
        else:
            obj = self._objects[path] = _Object(b"")
        return _MemoryWriter(self, path, obj)


class _MemoryWriter(Writer):
    """Appends straight into the stored object, so a later writer with `append=True` continues it."""

    def __init__(self, driver: Driver, path: str, obj: _Object) -> None:
        self.path = path
        self._driver = driver
        self._object = obj
        self._closed = False

    @property
    def size(self) -> int:
        return len(self._object.data)

    async def write(self, data: bytes) -> int:
        if self._closed:
            raise exceptions.UsageError(f"writer for {self.path!r} is closed")
        self._object.data += data
        self._object.mtime = time.time()
        return len(data)

    async def close(self) -> None:
        self._closed = True

    async def commit(self) -> None:
        if self._closed:
            raise exceptions.UsageError(f"writer for {self.path!r} is closed")
        self._closed = True

    async def cancel(self) -> None:
        self._closed = True
        if self._driver._objects.get(self.path) is self._object:
            del self._driver._objects[self.path]
