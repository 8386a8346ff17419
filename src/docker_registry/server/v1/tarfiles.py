"""The file listing of a layer (`/v1/images/<id>/files`), in the original's shape: one
`[path, type, deleted, size, mtime, mode, uid, gid]` per member, whiteouts (`.wh.<name>`) reported as deleted
`<name>`, union metadata (`.wh..wh.*`) left out.

Where the original went wrong, this is right: a whiteout is found in any directory (it only saw those at the top),
and paths are absolute whether the tar wrote `./etc` or `etc`. The layer is read as a stream (plain, gzip, bzip2 or
xz, told by tarfile from its first bytes) in a worker thread that pulls the blob's chunks from the event loop, so
neither a temporary copy nor the whole layer is ever needed.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import tarfile
from collections.abc import AsyncIterator
from typing import Any

from docker_registry.core import exceptions

FILE_TYPES = {
    tarfile.REGTYPE: "f",
    tarfile.AREGTYPE: "f",
    tarfile.LNKTYPE: "l",
    tarfile.SYMTYPE: "s",
    tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b",
    tarfile.DIRTYPE: "d",
    tarfile.FIFOTYPE: "i",
    tarfile.CONTTYPE: "t",
    tarfile.GNUTYPE_LONGNAME: "L",
    tarfile.GNUTYPE_LONGLINK: "K",
    tarfile.GNUTYPE_SPARSE: "S",
}
WHITEOUT = ".wh."
UNION_METADATA = ".wh..wh."


class NotATar(Exception):
    """The layer is not a tar (plain or compressed)."""


def entry(member: tarfile.TarInfo) -> list[Any] | None:
    """The listing entry of one member; None for union metadata."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    path = "/" + name.strip("/") if name not in ("", ".") else "/"
    directory, base = posixpath.split(path)
    deleted = False
    if base.startswith(UNION_METADATA):
        return None
    if base.startswith(WHITEOUT):
        path, deleted = posixpath.join(directory, base[len(WHITEOUT) :]), True
    return [
        path,
        FILE_TYPES.get(member.type, "u"),
        deleted,
        member.size,
        member.mtime,
        member.mode,
        member.uid,
        member.gid,
    ]


class _ChunkReader(io.RawIOBase):
    """A blocking file object over an async stream of chunks, read from a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            future = asyncio.run_coroutine_threadsafe(anext(self._chunks, b""), self._loop)
            chunk = future.result()
            self._done = not chunk
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _list(reader: io.RawIOBase) -> list[list[Any]]:
    listing = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 1024 * 1024), mode="r|*") as tar:
            for member in tar:
                found = entry(member)
                if found is not None:
                    listing.append(found)
    except exceptions.FileNotFoundError:
        raise  # the layer is gone from storage: not a question of its format
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise NotATar(str(e)) from None
    return listing


async def file_listing(chunks: AsyncIterator[bytes]) -> list[list[Any]]:
    reader = _ChunkReader(chunks, asyncio.get_running_loop())
    return await asyncio.to_thread(_list, reader)
