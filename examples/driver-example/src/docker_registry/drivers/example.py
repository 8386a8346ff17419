"""An example storage driver: every object is one file, named by its percent-encoded path, in a flat directory.

It shows what a third-party driver needs and nothing more: implement the protected methods of `Base`
(`_get_content`, `_put_content`, ...), which receive paths `Base` has already validated, map missing objects to
the core `FileNotFoundError`, keep blocking calls off the event loop, and publish whole objects atomically (write
to `tmp/`, fsync, rename into `objects/`). Directories are derived from the names, the way an object store derives
them from its keys; the only real directories, `tmp/` and `objects/`, are created when first needed and never
removed, so no remove can race their creation.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from docker_registry.core import exceptions
from docker_registry.core.driver import Base, Stat, Writer
from docker_registry.core.paths import immediate_children

__all__ = ["Driver"]

READ_SLICE = 1024 * 1024
WRITE_BUFFER = 512 * 1024
MAX_NAME = 255


class Driver(Base):
    """Options: `rootdirectory` (default `./example-data`), holding `objects/` and `tmp/`; `redirect_base`, an
    http(s) URL under which something else (a web server or CDN in front of `objects/`) serves each object at
    `<redirect_base>/<percent-encoded path>`, so the registry redirects blob downloads there."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        root = os.path.abspath(str(self.options.get("rootdirectory", "./example-data")))
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        self.redirect_base = _redirect_base(self.options.get("redirect_base"))

    def _file(self, path: str) -> str:
        name = quote(path, safe="")
        if len(name) > MAX_NAME:
            raise exceptions.WrongArgumentsError(f"path too long for the example driver: {path!r}")
        return os.path.join(self.objects, name)

    def _keys(self) -> list[str]:
        try:
            return [unquote(name) for name in os.listdir(self.objects)]
        except FileNotFoundError:
            return []

    def _keys_under(self, prefix: str) -> list[str]:
        start = f"{prefix}/" if prefix else ""
        return [key for key in self._keys() if key.startswith(start)]

    async def _get_content(self, path: str) -> bytes:
        return await asyncio.to_thread(_read_file, self._file(path), path)

    async def _put_content(self, path: str, data: bytes) -> None:
        async def once() -> AsyncIterator[bytes]:
            yield data

        await self._stream_write(path, once())

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(_open_for_reading, self._file(path), path)
        try:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                data = await asyncio.to_thread(f.read, READ_SLICE if remaining is None else min(READ_SLICE, remaining))
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            f.close()

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        target = self._file(path)
        await asyncio.to_thread(os.makedirs, self.tmp, exist_ok=True)
        temporary = os.path.join(self.tmp, uuid.uuid4().hex)
        f = await asyncio.to_thread(open, temporary, "xb")
        total, buffer = 0, bytearray()
        try:
            async for chunk in chunks:
                buffer += chunk
                total += len(chunk)
                if len(buffer) >= WRITE_BUFFER:
                    pending, buffer = buffer, bytearray()
                    await asyncio.to_thread(f.write, pending)
            await asyncio.to_thread(self._publish, f, buffer, temporary, target)
        except BaseException:
            f.close()
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        return total

    def _publish(self, f: BinaryIO, rest: bytes | bytearray, temporary: str, target: str) -> None:
        f.write(rest)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.makedirs(self.objects, exist_ok=True)
        os.replace(temporary, target)

    async def _list_directory(self, prefix: str) -> list[str]:
        children = immediate_children(await asyncio.to_thread(self._keys), prefix)
        if not children:
            raise exceptions.FileNotFoundError(f"no directory {prefix!r}")
        return children

    async def _exists(self, path: str) -> bool:
        target = self._file(path)
        return await asyncio.to_thread(os.path.isfile, target) or bool(await asyncio.to_thread(self._keys_under, path))

    async def _remove(self, path: str) -> None:
        await asyncio.to_thread(self._remove_sync, self._file(path), path)

    def _remove_sync(self, target: str, path: str) -> None:
        doomed = [self._file(key) for key in self._keys_under(path)]
        if os.path.isfile(target):
            doomed.append(target)
        if not doomed:
            raise exceptions.FileNotFoundError(f"{path!r} does not exist")
        for name in doomed:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    async def _stat(self, path: str) -> Stat:
        target = self._file(path)
        try:
            st = await asyncio.to_thread(os.stat, target)
        except FileNotFoundError:
            raise exceptions.FileNotFoundError(f"{path!r} does not exist") from None
        return Stat(size=st.st_size, mtime=st.st_mtime)

    async def _move(self, src: str, dst: str) -> None:
        source, target = self._file(src), self._file(dst)
        try:
            await asyncio.to_thread(os.replace, source, target)
        except FileNotFoundError:
            raise exceptions.FileNotFoundError(f"{src!r} does not exist") from None

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._keys_under, prefix):
            yield key

    async def _writer(self, path: str, append: bool) -> Writer:
        target = self._file(path)
        f = await asyncio.to_thread(self._open_writer, target, path, append)
        return _ExampleWriter(path, target, f, await asyncio.to_thread(os.path.getsize, target))

    def _open_writer(self, target: str, path: str, append: bool) -> BinaryIO:
        if not append:
            os.makedirs(self.objects, exist_ok=True)
            return open(target, "wb")
        try:
            return os.fdopen(os.open(target, os.O_WRONLY | os.O_APPEND), "ab")
        except FileNotFoundError:
            raise exceptions.FileNotFoundError(f"{path!r} does not exist: nothing to append to") from None

    def _local_path(self, path: str) -> str | None:
        return self._file(path)

    async def _content_redirect_url(self, path: str) -> str | None:
        return None if self.redirect_base is None else f"{self.redirect_base}/{quote(path)}"


class _ExampleWriter(Writer):
    """Appends to the object's own file; each write is one trip to a worker thread (kept simple on purpose)."""

    def __init__(self, path: str, target: str, f: BinaryIO, size: int) -> None:
        self.path = path
        self._target = target
        self._file: BinaryIO | None = f
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def _open(self) -> BinaryIO:
        if self._file is None:
            raise exceptions.UsageError(f"writer for {self.path!r} is closed")
        return self._file

    async def write(self, data: bytes) -> int:
        await asyncio.to_thread(self._open().write, data)
        self._size += len(data)
        return len(data)

    async def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            await asyncio.to_thread(f.close)

    async def commit(self) -> None:
        f, self._file = self._open(), None
        await asyncio.to_thread(_sync_and_close, f)

    async def cancel(self) -> None:
        await self.close()
        try:
            await asyncio.to_thread(os.unlink, self._target)
        except FileNotFoundError:
            pass


def _redirect_base(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise exceptions.ConfigError(f"redirect_base must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


def _open_for_reading(target: str, path: str) -> BinaryIO:
    try:
        return open(target, "rb")  # buffered: its lock keeps a close from racing a read in a worker thread
    except FileNotFoundError:
        raise exceptions.FileNotFoundError(f"{path!r} does not exist") from None


def _read_file(target: str, path: str) -> bytes:
    with _open_for_reading(target, path) as f:
        return f.read()


def _sync_and_close(f: BinaryIO) -> None:
    with f:
        f.flush()
        os.fsync(f.fileno())
