"""The storage driver contract: every backend the registry stores in implements `Base`.

Method names and meanings follow the original docker-registry-core (`get_content`, `put_content`,
`stream_read`, `stream_write`, `list_directory`, `exists`, `remove`, `get_size`, `content_redirect_url`), made
async because the server runs on asyncio, plus what a modern registry needs (`stat`, `move`, `walk`, resumable
writers for chunked uploads, `local_path` for sendfile, `remove_many` for garbage collection).

`Base` validates the arguments of every public method once, then calls the driver's protected implementation of
it (`get_content` -> `_get_content`, and so on), as CNCF Distribution's `base` wrapper does for its drivers.

Rules every driver follows (the suite in `docker_registry.testing` checks them):
- Paths are relative and slash-separated; anything that could leave the root is refused with
  `WrongArgumentsError` (see `paths.check_path`) by `Base` before the driver, and so any backend, is called.
- Content is bytes in and bytes out; drivers never decode.
- A missing object raises `exceptions.FileNotFoundError` from every read, size, stat and remove.
- `put_content` and `stream_write` are atomic: a reader sees the old object, the new one, or nothing, never a mix.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import importlib.metadata
import pkgutil
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from . import exceptions
from .paths import check_path, check_prefix

__all__ = ["CHUNK_SIZE", "ENTRY_POINT_GROUP", "Base", "Stat", "Writer", "available", "fetch"]

ENTRY_POINT_GROUP = "docker_registry.drivers"
CHUNK_SIZE = 64 * 1024
REMOVES_AT_ONCE = 16
"""`remove_many`'s default: removals under way at once (each mostly waits for the backend)."""
"""Read and write granularity: 64 KiB slices hashed and written fastest in measurements on this kind of machine."""


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    mtime: float
    """Seconds since the epoch of the last modification."""


class Writer(abc.ABC):
    """An object being written across several calls, maybe several requests or processes (chunked uploads): the
    storage side of an upload session, resumable anywhere.

    After `close`, a later `Base.writer(path, append=True)` (in the same process or another, after this process
    died even) continues where this one stopped, and its `size` is how many bytes the session holds: that is how
    the registry learns where a client must resume. Only after `commit` is the content an ordinary object under
    `path` (readable with `stream_read`, `get_content`, `stat`, and published with `move`). Between the two, what
    `path` holds is the driver's own: a filesystem appends to the file itself, so it is readable at once; S3
    keeps one multipart upload open across writers and stores there only the tail too small to be a part, with
    the upload's state (docs/architecture.md). A writer that ends without `close` (its process was killed) leaves
    the session at a size between the last `close` and what it wrote: never less than the last `close`, never
    bytes that were not written.
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
        """Flush and release resources; the content stays, to be continued by a later writer (not yet readable as an
        object: see the class)."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Flush, make the content durable (fsync on a filesystem) and readable as the object under `path`, even
        through a writer opened with `append` that wrote nothing; closes the writer."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Discard everything under `path` and close."""

    async def __aenter__(self) -> Writer:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()


class Base(abc.ABC):
    """Base class of every storage driver. `options` is the driver's own section of the configuration.

    The public methods are the interface the registry calls. Each validates its arguments once, here (paths with
    `check_path`, prefixes with `check_prefix`, ranges), then calls the protected method of the same name with an
    underscore (`get_content` calls `_get_content`), which is what a driver implements: a driver never sees a path
    that could leave its root, and never checks one itself. The public methods are final; drivers override only the
    protected ones. A prefix reaches the driver without its trailing slash (`"a/"` arrives as `"a"`).
    """

    moves_by_copy: bool = False
    """True when `move` copies the bytes (an object store: S3 copies server-side, then deletes) rather than renaming.
    The registry then writes a blob received whole in one request straight to its final path with `stream_write`,
    whose atomicity publishes nothing if the chunks end in an error (a digest that does not match), instead of
    writing it to the upload area and moving it. A driver wrapping another passes on the wrapped one's."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    # --- the interface: validation, then the driver's implementation -------------------------------------
    @final
    async def get_content(self, path: str) -> bytes:
        """Whole object as bytes; for small objects only."""
        return await self._get_content(check_path(path))

    @final
    async def put_content(self, path: str, data: bytes) -> None:
        """Store `data` under `path` atomically, replacing any previous object."""
        await self._put_content(check_path(path), data)

    @final
    def stream_read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Async iterator over chunks of the object from `offset`, `length` bytes at most (None: to the end).

        A bad path or range raises here, at the call, before anything is read; a missing object raises
        `FileNotFoundError` at the first iteration.
        """
        check_path(path)
        _check_range(offset, length)
        return self._stream_read(path, offset, length)

    @final
    async def stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        """Store what `chunks` yields under `path` atomically; return the number of bytes written. If iterating
        `chunks` raises, the error propagates and `path` keeps its previous object (or none)."""
        return await self._stream_write(check_path(path), chunks)

    @final
    async def list_directory(self, path: str = "") -> list[str]:
        """Immediate children of a directory, as full relative paths, sorted.

        Raises `FileNotFoundError` when nothing exists below `path` (and for a path that is an object).
        """
        return await self._list_directory(check_prefix(path))

    @final
    async def exists(self, path: str) -> bool:
        """True if an object or a non-empty directory exists at `path`."""
        return await self._exists(check_path(path))

    @final
    async def remove(self, path: str) -> None:
        """Remove an object, or every object under a directory prefix."""
        await self._remove(check_path(path))

    @final
    async def remove_many(self, paths: Sequence[str]) -> None:
        """Remove the objects at `paths` (objects only: a directory there is left alone, a missing one is no error).

        For garbage collection, which deletes thousands of objects a run: a driver deletes them in bulk where its
        backend can (S3's DeleteObjects takes 1,000 keys a request; the filesystem driver shares them out among
        threads of a process of its own). The default removes them one by one, `REMOVES_AT_ONCE` at a time.
        """
        await self._remove_many([check_path(path) for path in paths])

    @final
    async def get_size(self, path: str) -> int:
        """Size of an object in bytes."""
        return await self._get_size(check_path(path))

    @final
    async def content_redirect_url(self, path: str) -> str | None:
        """A URL clients may fetch the object from directly (a presigned URL), or None to be served by us."""
        return await self._content_redirect_url(check_path(path))

    @final
    async def stat(self, path: str) -> Stat:
        """Size and modification time of an object."""
        return await self._stat(check_path(path))

    @final
    async def move(self, src: str, dst: str) -> None:
        """Move an object, replacing `dst`; atomic where the backend allows (a rename on a filesystem)."""
        await self._move(check_path(src), check_path(dst))

    @final
    async def move_if_absent(self, src: str, dst: str, sync_source: bool = False) -> bool:
        """Move the object `src` to `dst` unless an object is at `dst` already: True if it moved, False (and `src`
        left as it is) if not. With `sync_source`, `src` (written through a writer only closed, not committed) is
        made durable before it moves. `FileNotFoundError` when `src` is missing and `dst` is not there.

        Publishing a verified upload: one call where "is it stored already?", the sync and the move were three (a
        thread hop or a request each). Not atomic as a whole: a concurrent `move` may still land on `dst` between
        the check and the move, which the registry allows (both are the same verified bytes)."""
        return await self._move_if_absent(check_path(src), check_path(dst), sync_source)

    @final
    async def put_if_absent(self, path: str, data: bytes) -> bool:
        """Write `data` as the object at `path` unless an object is there already: True if written (durable when
        this returns, as with `put_content`), False if not (the object there is left as it is).

        Publishing a small blob that arrived whole and verified (POST, then a PUT with the body): one call where
        writing it to the upload area and moving it from there were two. Not atomic as a whole by default: a
        concurrent write may still land on `path` between the check and the write, which the registry allows (both
        are the same verified bytes)."""
        return await self._put_if_absent(check_path(path), data)

    @final
    async def append_bytes(self, path: str, data: bytes, expected_size: int, durable: bool = False) -> int:
        """Append `data` to the object being written at `path` if it holds exactly `expected_size` bytes (0: create
        it, or truncate it), as a writer opened, written and closed (or committed, with `durable`) would. Returns
        the size found: `expected_size` when `data` was appended, else the size it holds, and nothing was written.
        `FileNotFoundError` when `expected_size` is not 0 and there is nothing to append to.

        An upload's small chunk (a whole layer in one PATCH): one step where a writer takes two (the filesystem
        driver: one thread call)."""
        return await self._append_bytes(check_path(path), data, expected_size, durable)

    @final
    def appender(self, path: str) -> Callable[[bytes, int], int] | None:
        """`append_bytes` (not durable) as a blocking call, `append(data, expected_size)`, for a caller that appends
        while it holds something it must not give up for an await: the registry appends an upload's small chunk
        inside the one database transaction that claims and releases its session. None when the driver can only
        append by awaiting (the default).

        It returns what `append_bytes` returns, and `expected_size` also when the object already holds
        `expected_size` bytes followed by exactly `data`: the same chunk appended again at the same offset (a
        transaction rolled back after its append ran, and run again) counts as appended, not as a mismatch."""
        return self._appender(check_path(path))

    @final
    def mover(self, src: str, dst: str, sync_source: bool = False) -> Callable[[], bool] | None:
        """`move_if_absent(src, dst, sync_source)` as a blocking call, for a caller already in a thread of its own:
        the registry publishes a verified upload in the database writer's thread, right after the commit that
        claims its session and pins its blob, where awaiting the move cost one more hand-off to a thread and back
        (about a tenth of a small blob's CPU here). None when the driver can only move by awaiting (the default)."""
        return self._mover(check_path(src), check_path(dst), sync_source)

    @final
    def putter(self, path: str, data: bytes) -> Callable[[], bool] | None:
        """`put_if_absent(path, data)` as a blocking call, for a caller already in a thread of its own: the registry
        publishes a small blob that arrived whole in the database writer's thread, right after the commit that
        claims its session and pins it (as `mover` for a blob that arrived in chunks). None when the driver can only
        write so by awaiting (the default)."""
        return self._putter(check_path(path), data)

    @final
    def unfinished_reader(self, path: str, limit: int) -> Callable[[], bytes | None] | None:
        """`read_unfinished(path, limit)` as a blocking call, for a caller already in a thread of its own: the
        registry reads a small session that another process wrote inside the transaction that claims it, where
        awaiting the read cost one more hand-off to a thread and back. None when the driver can only read so by
        awaiting (the default)."""
        return self._unfinished_reader(check_path(path), limit)

    @final
    async def read_unfinished(self, path: str, limit: int) -> bytes | None:
        """The bytes of an object being written (its writers only closed, not committed), if the driver can read
        them before `commit` and they are at most `limit`; None when it cannot, or they are more, or nothing was
        written.

        Lets a request finish an upload session that a request of another process wrote, without first claiming
        it to commit the bytes: it hashes what is there and then claims the session at exactly that size, which
        holds only if no one wrote to it since (a session only grows, so the bytes read stay its first bytes)."""
        return await self._read_unfinished(check_path(path), limit)

    @final
    def walk(self, prefix: str = "") -> AsyncIterator[str]:
        """Every object (not directory) under `prefix`, as full relative paths, in no guaranteed order.

        A bad prefix raises here, at the call.
        """
        return self._walk(check_prefix(prefix))

    @final
    async def writer(self, path: str, append: bool = False) -> Writer:
        """Open `path` for writing: truncated, or continued at its end with `append=True`."""
        return await self._writer(check_path(path), append)

    @final
    def local_path(self, path: str) -> str | None:
        """A filesystem path the server may `sendfile` from, or None when the backend is not a local disk."""
        return self._local_path(check_path(path))

    @final
    async def purge_temporary(self, older_than: float, dry_run: bool = False) -> tuple[int, int]:
        """Delete the driver's own temporary objects (what a write cut short by a crash left) last modified before
        `older_than`, seconds since the epoch; how many and their bytes. With `dry_run`, only count them.

        Only for garbage collection: a temporary object is in use while its write runs, so `older_than` must lie
        well before any write still running could have last written to it.
        """
        return await self._purge_temporary(older_than, dry_run)

    async def close(self) -> None:
        """Release connections and other resources; nothing to release by default."""
        return None

    async def check(self) -> None:
        """Reach the backend once, at start-up, before serving: a ConfigError whose message opens with the option
        at fault (`bucket: no such bucket`) stops the server with exit status 2. Nothing to check by default."""
        return None

    # --- what a driver implements: arguments already validated -------------------------------------------
    @abc.abstractmethod
    async def _get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def _put_content(self, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        """Implemented as an async generator (`async def` with `yield`)."""

    @abc.abstractmethod
    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int: ...

    @abc.abstractmethod
    async def _list_directory(self, prefix: str) -> list[str]:
        """`prefix` is `""` for the root, else a valid path without a trailing slash."""

    @abc.abstractmethod
    async def _exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    async def _remove(self, path: str) -> None: ...

    async def _remove_many(self, paths: Sequence[str]) -> None:
        """Each object through `_remove`, a few at once; a missing one, or a directory, is skipped."""
        limit = asyncio.Semaphore(REMOVES_AT_ONCE)

        async def remove(path: str) -> None:
            async with limit:
                try:
                    await self._stat(path)  # FileNotFoundError for a directory too: `_remove` would take its tree
                    await self._remove(path)
                except exceptions.FileNotFoundError:
                    pass

        await asyncio.gather(*(remove(path) for path in paths))

    async def _get_size(self, path: str) -> int:
        """The size from `_stat`; a driver with a cheaper way overrides it."""
        return (await self._stat(path)).size

    async def _content_redirect_url(self, path: str) -> str | None:
        """No redirect by default."""
        return None

    @abc.abstractmethod
    async def _stat(self, path: str) -> Stat: ...

    @abc.abstractmethod
    async def _move(self, src: str, dst: str) -> None: ...

    async def _move_if_absent(self, src: str, dst: str, sync_source: bool) -> bool:
        """By default the three calls it saves; a driver overrides it to do them in one step."""
        try:
            await self._stat(dst)
            return False
        except exceptions.FileNotFoundError:
            pass
        if sync_source:
            try:
                writer = await self._writer(src, True)
            except exceptions.FileNotFoundError:
                pass  # `_move` says so
            else:
                await writer.commit()
        await self._move(src, dst)
        return True

    async def _put_if_absent(self, path: str, data: bytes) -> bool:
        """By default a stat, then `put_content`; a driver overrides it to do both in one step."""
        try:
            await self._stat(path)
            return False
        except exceptions.FileNotFoundError:
            pass
        await self._put_content(path, data)
        return True

    async def _append_bytes(self, path: str, data: bytes, expected_size: int, durable: bool) -> int:
        """By default through a writer."""
        writer = await self._writer(path, expected_size > 0)
        if writer.size != expected_size:
            await writer.close()
            return writer.size
        await writer.write(data)
        await (writer.commit() if durable else writer.close())
        return expected_size

    async def _read_unfinished(self, path: str, limit: int) -> bytes | None:
        """By default the driver cannot (a writer's bytes may not be an object yet, as on S3)."""
        return None

    def _appender(self, path: str) -> Callable[[bytes, int], int] | None:
        """By default the driver cannot append without awaiting."""
        return None

    def _mover(self, src: str, dst: str, sync_source: bool) -> Callable[[], bool] | None:
        """By default the driver cannot move without awaiting."""
        return None

    def _putter(self, path: str, data: bytes) -> Callable[[], bool] | None:
        """By default the driver cannot write without awaiting."""
        return None

    def _unfinished_reader(self, path: str, limit: int) -> Callable[[], bytes | None] | None:
        """By default the driver cannot read an unfinished object without awaiting."""
        return None

    @abc.abstractmethod
    def _walk(self, prefix: str) -> AsyncIterator[str]:
        """Implemented as an async generator; `prefix` as for `_list_directory`."""

    @abc.abstractmethod
    async def _writer(self, path: str, append: bool) -> Writer: ...

    def _local_path(self, path: str) -> str | None:
        """No local file by default."""
        return None

    async def _purge_temporary(self, older_than: float, dry_run: bool) -> tuple[int, int]:
        """Nothing to purge by default: a driver whose writes are atomic on the backend leaves no temporary objects."""
        return 0, 0


def _check_range(offset: int, length: int | None) -> None:
    """Refuse a read range that is not `offset >= 0` and `length` None or `>= 0` with `WrongArgumentsError`."""
    if not isinstance(offset, int) or offset < 0:
        raise exceptions.WrongArgumentsError(f"invalid offset {offset!r}: must be an integer >= 0")
    if length is not None and (not isinstance(length, int) or length < 0):
        raise exceptions.WrongArgumentsError(f"invalid length {length!r}: must be an integer >= 0 or None")


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
