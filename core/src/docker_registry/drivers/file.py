"""The filesystem driver: objects are files below `rootdirectory`, directories are created and pruned as needed.

Every blocking call runs in a worker thread, in large slices (1 MiB reads, writes buffered to 512 KiB) so that
the cost of a thread hop stays small next to the work it carries. Writers ask the kernel to start writing their
bytes to disk as they go (Linux `sync_file_range`), so the fsync that makes an object durable finds little left.
Whole-object writes go to a temporary file in one hidden directory below the root (`.tmp-writes/`), are fsynced,
then renamed over the final name: a reader, or a restart after a crash, sees the previous object or the new one,
never a part. What a killed write leaves is in that one directory, so purging it lists one directory rather than
walking every object's. Names beginning with `.tmp-` are reserved and never appear in listings. The fsyncs that
make a new name durable (the file's, its directory's, a new directory's in its parent) run at the same time
(`_fsync_together`), so they share one journal commit.

Directories are created when a file goes into them and pruned by removes once empty, by any thread or process
sharing the root. So every creation (temporary files, writers, moves) tolerates its directory, or any parent,
vanishing before its file is in it, and creates it again (`_in_directory`). Paths arrive validated by `Base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import queue
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, TypeVar

from docker_registry.core import exceptions, removal
from docker_registry.core.driver import Base, Stat, Writer
from docker_registry.core.paths import join

__all__ = ["Driver"]

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
TEMP_DIRECTORY = TEMP_PREFIX + "writes"
"""Below the root: the temporary files of whole-object writes (an earlier layout put them beside their targets)."""
READ_SLICE = 1024 * 1024
WRITE_BUFFER = 512 * 1024
WRITEBACK_EVERY = 1024 * 1024
_WALK_BATCH = 1000
_DIRECTORY_RETRIES = 100
"""Attempts at creating a directory and using it while concurrent removes keep pruning it; each lost race costs
microseconds, so the bound only stops a loop that something outside the registry keeps defeating."""

_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}
"""What `link` answers on a filesystem without hard links (FAT, some network and FUSE filesystems), or where the
file has too many: then the move falls back to fsync and rename."""

T = TypeVar("T")


class Driver(Base):
    """Stores objects as files below the `rootdirectory` option (default `./data`)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.root = os.path.abspath(str(self.options.get("rootdirectory", "./data")))
        self.temporary = os.path.join(self.root, TEMP_DIRECTORY)
        """The temporary files' directory (`TEMP_DIRECTORY` below the root), never pruned."""

    # --- path mapping (paths arrive validated by Base; only the names reserved here are checked) ------------
    def _full(self, path: str) -> str:
        segments = path.split("/")
        if any(s.startswith(TEMP_PREFIX) for s in segments):
            raise exceptions.WrongArgumentsError(f"invalid path {path!r}: names starting {TEMP_PREFIX!r} are reserved")
        return os.path.join(self.root, *segments)

    def _full_prefix(self, prefix: str) -> str:
        return self._full(prefix) if prefix else self.root

    # --- whole objects ------------------------------------------------------------------------------------
    async def _get_content(self, path: str) -> bytes:
        full = self._full(path)
        return await asyncio.to_thread(_read_all, full, path)

    async def _put_content(self, path: str, data: bytes) -> None:
        full = self._full(path)
        await asyncio.to_thread(self._put_sync, full, path, data)

    def _put_sync(self, full: str, path: str, data: bytes) -> None:
        f, tmp = self._open_temp(full, path)
        try:
            f.write(data)
            self._publish(f, tmp, full, path)
        except BaseException:
            self._discard(f, tmp)
            raise

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(_open_read, self._full(path), path, offset)
        try:
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_SLICE if remaining is None else min(READ_SLICE, remaining)
                data = await asyncio.to_thread(f.read, want)
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            f.close()

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        full = self._full(path)
        f, tmp = await asyncio.to_thread(self._open_temp, full, path)
        total = 0
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                total += len(chunk)
                if len(buffer) >= WRITE_BUFFER:
                    pending, buffer = buffer, bytearray()
                    await asyncio.to_thread(f.write, pending)
            await asyncio.to_thread(self._write_and_publish, f, buffer, tmp, full, path)
        except BaseException:
            # Synchronous on purpose: it must run even while this task is being cancelled, and it is one
            # close and one unlink.
            self._discard(f, tmp)
            raise
        return total

    # --- directories --------------------------------------------------------------------------------------
    async def _list_directory(self, prefix: str) -> list[str]:
        full = self._full_prefix(prefix)
        return await asyncio.to_thread(_list_sync, full, prefix)

    async def _exists(self, path: str) -> bool:
        full = self._full(path)
        return await asyncio.to_thread(_exists_sync, full)

    async def _remove(self, path: str) -> None:
        full = self._full(path)
        await asyncio.to_thread(self._remove_sync, full, path)

    def _remove_sync(self, full: str, path: str) -> None:
        if os.path.isdir(full):
            if not _has_visible(full):
                raise exceptions.FileNotFoundError(f"{path!r} does not exist")
            _remove_tree(full)
        else:
            try:
                os.unlink(full)
            except (FileNotFoundError, NotADirectoryError):
                raise exceptions.FileNotFoundError(f"{path!r} does not exist") from None
        self._prune(os.path.dirname(full))

    async def _remove_many(self, paths: Sequence[str]) -> None:
        """In a process of its own (`removal`), which holds none of asyncio's threads while it runs (inside the
        server they serve requests). Where none can be started (Python embedded or frozen, processes refused) or
        it ends abnormally, in threads of this process instead, one of asyncio's held meanwhile: removing twice is
        harmless. Cancelled, the process is stopped."""
        fulls = [self._full(path) for path in paths]
        if fulls and not await self._removed_elsewhere(fulls):
            await asyncio.to_thread(removal.remove_all, self.root, fulls, (self.temporary,))

    async def _removed_elsewhere(self, fulls: list[str]) -> bool:
        """`fulls` removed by a removal process; False when none could do it (nothing is wrong with the files)."""
        if not sys.executable or getattr(sys, "frozen", False):
            return False
        try:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-I", "-S", removal.__file__, self.root, self.temporary),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            log.warning("removing %d files in this process: no removal process (%s)", len(fulls), error)
            return False
        try:
            out, err = await process.communicate(b"\0".join(os.fsencode(full) for full in fulls))
        except BaseException:  # cancelled: the removals stop with the caller
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode == removal.FAILED:
            raise removal.reported_error(out)
        if process.returncode != 0:
            log.warning(
                "removing %d files in this process: the removal process ended with status %s: %s",
                len(fulls),
                process.returncode,
                err.decode(errors="replace").strip()[-500:],
            )
        return process.returncode == 0

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        files = _walk_files(self._full_prefix(prefix), prefix)
        while batch := await asyncio.to_thread(_take, files, _WALK_BATCH):
            for path in batch:
                yield path

    async def _purge_temporary(self, older_than: float, dry_run: bool) -> tuple[int, int]:
        return await asyncio.to_thread(self._purge_temporary_sync, older_than, dry_run)

    def _purge_temporary_sync(self, older_than: float, dry_run: bool) -> tuple[int, int]:
        count = size = 0
        try:
            entries = list(os.scandir(self.temporary))
        except FileNotFoundError:
            return 0, 0
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
                if stat.st_mtime >= older_than or entry.is_dir(follow_symlinks=False):
                    continue  # young, or a folder: nothing this driver writes there (left for whoever made it)
                if not dry_run:
                    os.unlink(entry.path)
            except FileNotFoundError:  # its write finished (renamed) or gave up meanwhile
                continue
            count += 1
            size += stat.st_size
        return count, size

    # --- metadata and moves -------------------------------------------------------------------------------
    async def _stat(self, path: str) -> Stat:
        full = self._full(path)
        return await asyncio.to_thread(_stat_sync, full, path)

    async def _move(self, src: str, dst: str) -> None:
        full_src, full_dst = self._full(src), self._full(dst)
        await asyncio.to_thread(self._move_sync, full_src, src, full_dst, dst)

    def _move_sync(self, full_src: str, src: str, full_dst: str, dst: str) -> None:
        if not os.path.isfile(full_src):
            raise exceptions.FileNotFoundError(f"{src!r} does not exist")
        if os.path.isdir(full_dst):
            raise exceptions.WrongArgumentsError(f"cannot move {src!r} onto {dst!r}: it is a directory")

        def rename() -> None:
            with _source_must_exist(full_src, src):
                os.replace(full_src, full_dst)

        _, parents = self._in_directory(full_dst, dst, rename)
        _unlink_if_same(full_src, full_dst)
        _fsync_together([], [os.path.dirname(full_dst), *parents])
        self._prune(os.path.dirname(full_src))

    async def _move_if_absent(self, src: str, dst: str, sync_source: bool) -> bool:
        full_src, full_dst = self._full(src), self._full(dst)
        return await asyncio.to_thread(self._move_if_absent_sync, full_src, src, full_dst, dst, sync_source)

    def _mover(self, src: str, dst: str, sync_source: bool) -> Callable[[], bool]:
        full_src, full_dst = self._full(src), self._full(dst)
        return lambda: self._move_if_absent_sync(full_src, src, full_dst, dst, sync_source)

    def _move_if_absent_sync(self, full_src: str, src: str, full_dst: str, dst: str, sync_source: bool) -> bool:
        """The check, the fsync of the source and the move (with its directory fsyncs) in one thread call."""
        if os.path.isfile(full_dst):
            return False
        if sync_source:
            linked = self._link_and_sync(full_src, src, full_dst, dst)
            if linked is not None:
                return linked
            _fsync_file(full_src)
        self._move_sync(full_src, src, full_dst, dst)
        return True

    def _link_and_sync(self, full_src: str, src: str, full_dst: str, dst: str) -> bool | None:
        """Publish a file not yet durable with one journal commit where fsync-then-rename costs two: give it its
        new name first (a hard link, which refuses to replace anything), then fsync the file and the directories
        of the new name, all at once (`_fsync_together`): on ext4 and XFS the file's fsync commits the journal with
        the new name and directories in it, and the directory fsyncs wait for that same commit. True if it moved,
        False if an object took `dst` meanwhile (the source is left as it is), None if the filesystem has no hard
        links.

        Durable when it returns, like the move: the bytes and both directory entries are fsynced. A crash before
        that can leave the name pointing to bytes not yet on disk; the name is then one the database does not
        know (the registry links a blob only after this returns), and the next upload of the blob replaces the
        file (`Uploads._place`). Never a torn object for anyone who found the blob through the database.
        """

        def link() -> None:
            with _source_must_exist(full_src, src):
                os.link(full_src, full_dst)

        try:
            _, parents = self._in_directory(full_dst, dst, link)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in _NO_HARD_LINKS:
                return None
            raise
        _fsync_together([full_dst], [os.path.dirname(full_dst), *parents])
        try:
            os.unlink(full_src)
        except FileNotFoundError:
            pass  # a concurrent cancel removed the session's name; the blob keeps its own
        self._prune(os.path.dirname(full_src))
        return True

    async def _put_if_absent(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        return await asyncio.to_thread(self._put_if_absent_sync, full, path, data)

    def _putter(self, path: str, data: bytes) -> Callable[[], bool]:
        full = self._full(path)
        return lambda: self._put_if_absent_sync(full, path, data)

    def _put_if_absent_sync(self, full: str, path: str, data: bytes) -> bool:
        """A temporary file, published by `_link_and_sync`: given its name with a hard link (which refuses to
        replace anything), then the file and the directories of its name fsynced together, one journal commit
        where `put_content` (fsync, then rename) costs two. Without hard links, `put_content`'s way, after a check
        that nothing is there.

        No look before writing: a new blob (the only kind the registry sends here) finds nothing at its name, and
        the link is what refuses an existing one, after a temporary write that is then dropped. Nine system calls
        for a blob into a new directory (open, write, close, mkdir, link, open, fsync, close, unlink) besides the
        directory fsyncs, where looking first, Python's buffered file, walking up the new directory's parents and
        unlinking twice cost seventeen: each one gives up the GIL and takes it back, which under load is a futex
        wait of its own."""
        fd, tmp = self._create_temp()
        linked: bool | None = None
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            linked = self._link_and_sync(tmp, path, full, path)
        except exceptions.FileNotFoundError:
            raise exceptions.BrokenError(f"cannot write {path!r}: its temporary file vanished") from None
        finally:
            if linked is not True:  # a published file's temporary name is gone already
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        if linked is False and os.path.isdir(full):
            raise exceptions.WrongArgumentsError(f"cannot write {path!r}: it is a directory")
        if linked is None:
            if os.path.isfile(full):
                return False
            self._put_sync(full, path, data)
            return True
        return linked

    async def _append_bytes(self, path: str, data: bytes, expected_size: int, durable: bool) -> int:
        full = self._full(path)
        return await asyncio.to_thread(self._append_bytes_sync, full, path, data, expected_size, durable)

    def _append_bytes_sync(self, full: str, path: str, data: bytes, expected_size: int, durable: bool) -> int:
        """The writer's open, write and close (or commit) in one thread call, on a bare descriptor (a buffered
        file object would add an `fstat`, an `ioctl` and a copy)."""
        fd = self._open_writer_fd(full, path, append=expected_size > 0)
        try:
            found = os.fstat(fd).st_size
            if found != expected_size:
                return found
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return expected_size

    def _appender(self, path: str) -> Callable[[bytes, int], int]:
        full = self._full(path)
        return lambda data, expected_size: self._append_again_sync(full, path, data, expected_size)

    def _append_again_sync(self, full: str, path: str, data: bytes, expected_size: int) -> int:
        """`_append_bytes_sync`, where a mismatch that is `data` already appended at `expected_size` counts as
        appended (see `Base.appender`): the tail is read back only then, at most a small chunk."""
        found = self._append_bytes_sync(full, path, data, expected_size, durable=False)
        if found != expected_size + len(data) or not data:
            return found
        try:
            with open(full, "rb") as f:
                f.seek(expected_size)
                tail = f.read(len(data) + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return found
        return expected_size if tail == data else found

    async def _read_unfinished(self, path: str, limit: int) -> bytes | None:
        return await asyncio.to_thread(_read_at_most, self._full(path), limit)

    def _unfinished_reader(self, path: str, limit: int) -> Callable[[], bytes | None]:
        full = self._full(path)
        return lambda: _read_at_most(full, limit)

    async def _writer(self, path: str, append: bool) -> Writer:
        full = self._full(path)
        f, size = await asyncio.to_thread(self._open_writer, full, path, append)
        return _FileWriter(self, path, full, f, size)

    def _open_writer(self, full: str, path: str, append: bool) -> tuple[BinaryIO, int]:
        f = self._open_writer_file(full, path, append)
        return f, os.fstat(f.fileno()).st_size

    def _open_writer_file(self, full: str, path: str, append: bool) -> BinaryIO:
        return os.fdopen(self._open_writer_fd(full, path, append), "ab" if append else "wb")

    def _open_writer_fd(self, full: str, path: str, append: bool) -> int:
        try:
            if append:
                try:
                    # no O_CREAT: a lost upload must not restart empty
                    return os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                except (FileNotFoundError, NotADirectoryError):
                    raise exceptions.FileNotFoundError(f"{path!r} does not exist: nothing to append to") from None
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            try:  # its directory is usually there (a flat session's `uploads/`): one system call
                return os.open(full, flags, 0o666)
            except (FileNotFoundError, NotADirectoryError):  # a directory to make, or a clear error to give
                return self._in_directory(full, path, lambda: os.open(full, flags, 0o666))[0]
        except IsADirectoryError:
            raise exceptions.WrongArgumentsError(f"cannot write {path!r}: it is a directory") from None

    def _local_path(self, path: str) -> str | None:
        """The object's own file, without checking that it exists: stat-ing here would block the event loop,
        and the caller's open or sendfile reports a missing object anyway."""
        return self._full(path)

    # --- helpers that need the root -----------------------------------------------------------------------
    def _open_temp(self, full: str, path: str) -> tuple[BinaryIO, str]:
        if os.path.isdir(full):
            raise exceptions.WrongArgumentsError(f"cannot write {path!r}: it is a directory")
        fd, tmp = self._create_temp()
        return os.fdopen(fd, "wb"), tmp

    def _create_temp(self) -> tuple[int, str]:
        """A new temporary file, as a bare descriptor (`put_if_absent`'s small whole object needs no buffered file
        object: Python's `open` adds an `fstat` and an `ioctl`)."""
        directory = self.temporary
        tmp = os.path.join(directory, uuid.uuid4().hex)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileNotFoundError:  # the first write into this root
            os.makedirs(directory, exist_ok=True)
            return os.open(tmp, flags, 0o666), tmp

    def _write_and_publish(self, f: BinaryIO, data: bytes | bytearray, tmp: str, full: str, path: str) -> None:
        f.write(data)
        self._publish(f, tmp, full, path)

    def _publish(self, f: BinaryIO, tmp: str, full: str, path: str) -> None:
        """Make the temporary file durable, then rename it over the final name (atomic on POSIX), in a directory
        made (again) for it, and make the new name durable."""
        f.flush()
        os.fsync(f.fileno())
        f.close()

        def rename() -> None:
            try:
                os.replace(tmp, full)
            except IsADirectoryError:
                raise exceptions.WrongArgumentsError(f"cannot write {path!r}: it is a directory") from None

        _, parents = self._in_directory(full, path, rename)
        _fsync_together([], [os.path.dirname(full), *parents])

    def _in_directory(self, full: str, path: str, action: Callable[[], T]) -> tuple[T, list[str]]:
        """Create the parent directories of `full`, then run `action`, which puts something in the last of them;
        `action`'s result, and the parents of the directories this call created (shortest first), which a durable
        caller fsyncs with the new name's own directory, so a power loss cannot drop the path to the object.

        Until `action` has, any of those directories may be empty, and a concurrent remove (in this process or
        another) prunes empty directories: between `makedirs` creating one level and the next, or between
        `makedirs` and `action`. Either shows as a builtin `FileNotFoundError`; then create what is missing and
        try again. Once `action` has put a file in the directory, no prune can remove it or its parents.
        """
        directory = os.path.dirname(full)
        created: list[str] = []
        for _ in range(_DIRECTORY_RETRIES):
            try:
                if not self._made_last_level(directory, path, created):
                    missing = directory
                    while missing != self.root and not os.path.isdir(missing):
                        created.append(missing)
                        missing = os.path.dirname(missing)
                    os.makedirs(directory, exist_ok=True)
            except FileNotFoundError:
                continue  # a parent created by this very call was pruned before its child was made
            except (FileExistsError, NotADirectoryError):
                raise exceptions.WrongArgumentsError(f"cannot write {path!r}: a parent is an object") from None
            try:
                result = action()
            except exceptions.FileNotFoundError:
                raise  # the action's own verdict (a move whose source is gone), not a pruned directory
            except FileNotFoundError:
                continue
            return result, sorted({os.path.dirname(d) for d in created}, key=len)
        raise exceptions.BrokenError(f"cannot write {path!r}: its directory keeps disappearing")

    def _made_last_level(self, directory: str, path: str, created: list[str]) -> bool:
        """The common cases of `_in_directory` in one system call: `directory` made by one `mkdir` (a new blob's
        `<hex>/`, an older session's `uploads/<id>/`: noted in `created`) or there already. False when a parent is
        missing too (or `directory` is the root): then the caller walks up and makes every missing level.

        A directory that existed at the `mkdir` may be pruned before it is looked at (a flat session's `uploads/`,
        shared by every session, empties whenever the last one ends): then it is missing, not an object, and the
        caller makes it again."""
        if directory == self.root:
            return False
        try:
            os.mkdir(directory)
        except FileExistsError:
            if os.path.isdir(directory):
                return True
            if os.path.lexists(directory):
                raise exceptions.WrongArgumentsError(f"cannot write {path!r}: a parent is an object") from None
            return False
        except FileNotFoundError:
            return False
        created.append(directory)
        return True

    def _prune(self, directory: str) -> None:
        """Remove empty directories from `directory` up to (not including) the root, so none linger as ghosts.

        A directory being created into may be removed here before its file arrives: `_in_directory` retries.
        The temporary files' directory is never removed (`_link_and_sync` prunes after publishing one of them):
        `_create_temp` creates it only once, and a removal between that and its `open` would fail a write.
        """
        removal.prune(self.root, directory, (self.temporary,))

    def _discard(self, f: BinaryIO, tmp: str) -> None:
        f.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass


class _FileWriter(Writer):
    """Appends to the file itself, buffering small writes so each thread hop carries at least 512 KiB.

    Every `WRITEBACK_EVERY` bytes the kernel is asked to start writing them out: without that it keeps them all
    as dirty pages until the final fsync, which then takes as long again as receiving them did.
    """

    def __init__(self, driver: Driver, path: str, full: str, f: BinaryIO, size: int) -> None:
        self.path = path
        self._driver = driver
        self._full = full
        self._file: BinaryIO | None = f
        self._buffer = bytearray()
        self._size = size
        self._written_back = size  # bytes before this offset were already handed to the disk (or predate us)
        self._short = False
        """A write failed part-way (a full disk): `size` is then what the file holds, read once it is closed."""

    @property
    def size(self) -> int:
        return self._size

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise exceptions.UsageError(f"writer for {self.path!r} is closed")
        return self._file

    async def write(self, data: bytes) -> int:
        f = self._open_file()
        self._size += len(data)
        if not self._buffer and len(data) >= WRITE_BUFFER:
            pending: bytes | bytearray = data  # large enough already: no copy into the buffer
        else:
            self._buffer += data
            if len(self._buffer) < WRITE_BUFFER:
                return len(data)
            pending, self._buffer = self._buffer, bytearray()
        start, end = self._written_back, self._size
        if end - start >= WRITEBACK_EVERY:
            self._written_back = end
        else:
            start = end
        try:
            await asyncio.to_thread(_write_and_start_writeback, f, pending, start, end, self._full, self.path)
        except OSError:
            self._short = True
            raise
        return len(data)

    async def close(self) -> None:
        if self._file is not None:
            await self._finish(durable=False)

    async def commit(self) -> None:
        self._open_file()
        await self._finish(durable=True)

    async def _finish(self, durable: bool) -> None:
        f, pending = self._open_file(), self._buffer
        self._file, self._buffer = None, bytearray()
        try:
            await asyncio.to_thread(_write_and_close, f, pending, durable, self._full, self.path)
        except OSError:
            self._short = True
            raise
        finally:
            if self._short:  # the session records what the file holds, not what it was given
                self._size = await asyncio.to_thread(_size_of, self._full, self._size)

    async def cancel(self) -> None:
        f, self._file, self._buffer = self._file, None, bytearray()
        await asyncio.to_thread(self._cancel_sync, f)

    def _cancel_sync(self, f: BinaryIO | None) -> None:
        if f is not None:
            f.close()
        try:
            os.unlink(self._full)
        except OSError:
            pass
        self._driver._prune(os.path.dirname(self._full))


# --- blocking helpers, run in worker threads ----------------------------------------------------------------
def _open_read(full: str, path: str, offset: int) -> BinaryIO:
    try:
        # Buffered, not raw: its lock makes a close from a cancelled reader wait for a read still running in a
        # worker thread, instead of freeing the descriptor number for reuse under that read. Reads of a slice or
        # more bypass the buffer, so nothing is copied twice.
        f = open(full, "rb")  # noqa: SIM115 - closed by the generator
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise exceptions.FileNotFoundError(f"{path!r} does not exist") from None
    if offset:
        f.seek(offset)
    return f


def _read_at_most(full: str, limit: int) -> bytes | None:
    """The whole file if it holds at most `limit` bytes (a writer appends to the file itself: readable at once)."""
    try:
        with open(full, "rb") as f:
            if os.fstat(f.fileno()).st_size > limit:
                return None  # a large session: not even partly read
            data = f.read(limit + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return data if 0 < len(data) <= limit else None


def _read_all(full: str, path: str) -> bytes:
    with _open_read(full, path, 0) as f:
        return f.read()


def _stat_sync(full: str, path: str) -> Stat:
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        raise exceptions.FileNotFoundError(f"{path!r} does not exist") from None
    if not os.path.isfile(full):
        raise exceptions.FileNotFoundError(f"{path!r} is a directory, not an object")
    return Stat(size=st.st_size, mtime=st.st_mtime)


def _still_at(f: BinaryIO, full: str, path: str) -> None:
    """Raise FileNotFoundError unless the file open in `f` is still the one at `full`. A writer paused (SIGSTOP, a
    frozen VM) past its claim's lease may wake after another took the object over and published it: its rename
    kept the inode, so the paused writer's bytes would have gone into a published, verified blob."""
    try:
        here = os.stat(full)
    except FileNotFoundError:
        here = None
    if here is None or not os.path.samestat(here, os.fstat(f.fileno())):
        raise exceptions.FileNotFoundError(f"{path!r} was moved away while this writer held it")


def _write_and_start_writeback(
    f: BinaryIO, data: bytes | bytearray, start: int, end: int, full: str, path: str
) -> None:
    _still_at(f, full, path)
    f.write(data)
    if end > start:
        f.flush()
        _start_writeback(f.fileno(), start, end - start)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None  # not Linux: the final fsync does all the writing
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range to disk without waiting for it; durability still comes only from fsync."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure only means less head start


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _size_of(full: str, otherwise: int) -> int:
    try:
        return os.stat(full).st_size
    except OSError:
        return otherwise


def _write_and_close(f: BinaryIO, data: bytes | bytearray, durable: bool, full: str, path: str) -> None:
    try:
        if data:
            _still_at(f, full, path)
        f.write(data)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    finally:
        f.close()


@contextlib.contextmanager
def _source_must_exist(full_src: str, src: str) -> Iterator[None]:
    """A rename or link whose source went away raises the driver's FileNotFoundError; one whose destination's
    directory went away (a concurrent prune) raises the OS error, which `_in_directory` retries."""
    try:
        yield
    except FileNotFoundError:
        if not os.path.isfile(full_src):
            raise exceptions.FileNotFoundError(f"{src!r} does not exist") from None
        raise


def _unlink_if_same(full_src: str, full_dst: str) -> None:
    """After a rename: drop `src` if it is still there as another name of `dst`'s file, which a rename leaves as
    it is (POSIX). Only a publication cut short by a crash between its link and its unlink (`_link_and_sync`)
    leaves such a pair."""
    try:
        if os.path.samefile(full_src, full_dst):
            os.unlink(full_src)
    except FileNotFoundError:
        pass


def _fsync_file(full: str) -> None:
    """Make a file's bytes durable (written through a writer that was only closed); a missing file is left to the
    caller's next step to report."""
    try:
        fd = os.open(full, os.O_WRONLY | os.O_APPEND)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_THREADS = 8
"""Threads that fsync the directories of a new name while the calling thread fsyncs the file (`_fsync_together`):
two or three per publication, from as many threads at once as asyncio's pool has (6 on 2 cores); an idle one
costs nothing, a missing one makes its fsync wait and then pay a disk cache flush of its own."""
_syncers: queue.SimpleQueue[_Sync] | None = None
_syncers_made = threading.Lock()


class _Sync:
    """One fsync handed to a syncer thread: `done` is released once it has returned (or failed, with `error`).

    A bare queue and lock rather than a `ThreadPoolExecutor`, whose futures and conditions cost more CPU than the
    wake-ups themselves: measured on a 20 KB blob published into new directories (its file and three directories),
    the hand-offs cost 50-70 µs of CPU with an executor, 15-20 µs this way, against the same fsyncs one after
    another."""

    __slots__ = ("directory", "done", "error", "full")

    def __init__(self, full: str, directory: bool) -> None:
        self.full, self.directory = full, directory
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


def _sync_queue() -> queue.SimpleQueue[_Sync]:
    """This process's fsync threads, started on first use (a forked child starts its own)."""
    global _syncers
    with _syncers_made:
        if _syncers is None:
            jobs: queue.SimpleQueue[_Sync] = queue.SimpleQueue()
            for i in range(_SYNC_THREADS):
                threading.Thread(target=_serve_syncs, args=(jobs,), name=f"fsync-{i}", daemon=True).start()
            _syncers = jobs
        return _syncers


def _forget_threads() -> None:
    """The parent's fsync threads do not exist in a forked child: it starts its own on first use."""
    global _syncers, _syncers_made
    _syncers, _syncers_made = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def _serve_syncs(jobs: queue.SimpleQueue[_Sync]) -> None:
    while True:
        sync = jobs.get()
        try:
            _fsync_path(sync.full, sync.directory)
        except BaseException as error:
            sync.error = error
        finally:
            sync.done.release()


def _fsync_together(files: Sequence[str], directories: Sequence[str]) -> None:
    """fsync every file and directory given, at the same time, and return when all are durable. One alone (a file
    rewritten in its directory) is fsynced on the calling thread, with no hand-off.

    The same calls as one after another, and the same guarantee; only cheaper. A journaling filesystem makes the
    first fsync commit the running transaction, which holds every change made before it (the file's new blocks,
    the new name, the new directories), and an fsync arriving while that commit runs waits for it. An fsync that
    arrives after it, finding its changes committed already, still asks the disk to empty its write cache (ext4:
    `blkdev_issue_flush`), a full cache flush each: measured on this machine's virtual disk, a 20 KB file and the
    three directories of its new blob name took 4.1 ms one after another, 1.75 ms together (the file alone 1.2).
    """
    paths = [(full, False) for full in files] + [(full, True) for full in directories]
    if not paths:
        return
    first, rest = paths[0], paths[1:]
    handed = [_Sync(*path) for path in rest]
    if handed:
        jobs = _sync_queue()
        for sync in handed:
            jobs.put(sync)
    try:
        _fsync_path(*first)
    finally:
        for sync in handed:
            sync.done.acquire()
    for sync in handed:
        if sync.error is not None:
            raise sync.error


def _fsync_path(full: str, directory: bool) -> None:
    if directory:
        _fsync_directory(full)
    else:
        _fsync_file(full)


def _fsync_directory(directory: str) -> None:
    """Persist a rename: without it a power loss may forget the new name even though the data is on disk.

    A directory gone already held the object only until a concurrent remove took it (and pruned the directory):
    there is no name left to persist.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(directory: str) -> None:
    """`shutil.rmtree`, except that entries removed meanwhile by a concurrent remove or prune are no error."""

    def vanished_is_fine(function: object, path: str, error: BaseException) -> None:
        if not isinstance(error, FileNotFoundError):
            raise error

    if sys.version_info >= (3, 12):
        shutil.rmtree(directory, onexc=vanished_is_fine)
    else:
        shutil.rmtree(directory, onerror=lambda function, path, info: vanished_is_fine(function, path, info[1]))


def _visible(name: str) -> bool:
    return not name.startswith(TEMP_PREFIX)


def _has_visible(directory: str) -> bool:
    """True if an object lives somewhere below `directory`; stops at the first one found."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not _visible(entry.name):
                    continue
                if not entry.is_dir() or _has_visible(entry.path):
                    return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    return False


def _exists_sync(full: str) -> bool:
    return os.path.isfile(full) or (os.path.isdir(full) and _has_visible(full))


def _list_sync(full: str, prefix: str) -> list[str]:
    try:
        with os.scandir(full) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        raise exceptions.FileNotFoundError(f"no directory {prefix!r}") from None
    children = sorted(
        join(prefix, e.name) for e in entries if _visible(e.name) and (not e.is_dir() or _has_visible(e.path))
    )
    if not children:
        raise exceptions.FileNotFoundError(f"no directory {prefix!r}")
    return children


def _walk_files(full: str, prefix: str) -> Iterator[str]:
    for directory, dirnames, filenames in os.walk(full):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        relative = os.path.relpath(directory, full)
        base = prefix if relative == "." else join(prefix, relative.replace(os.sep, "/"))
        for name in filenames:
            if _visible(name):
                yield join(base, name)


def _take(it: Iterator[T], n: int) -> list[T]:
    out: list[T] = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out
