"""What the health checks probe. Each returns when all is well and raises with a message an operator can act on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from docker_registry.core import exceptions
from docker_registry.core.driver import Base

from ..config import StorageConfig
from ..config.values import space_floor, split_addr
from ..http.outgoing import client_error_text, request_url
from ..store.facade import AsyncMetadataStore
from .monitor import Probe

PROBE_PREFIX = "_health-"
"""The storage probe's small objects sit at the storage root, beside `blobs/` and `uploads/`, one name per
process, removed again at once. Not in a shared directory: the filesystem driver removes a directory once it is
empty, and another worker's probe could then find its directory gone under it and fail for nothing."""


def storage_writable(driver: Base) -> Probe:
    """A small object written and removed: a volume gone read-only, a lost mount or a full disk all fail it."""
    path = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"

    async def probe() -> None:
        await driver.put_content(path, b"ok\n")
        await driver.remove(path)

    return probe


def storage_readable(driver: Base) -> Probe:
    """For a registry in read-only mode, whose volume may well be mounted read-only: the root can be listed (an
    empty root, which the driver reports as missing, answered too)."""

    async def probe() -> None:
        with contextlib.suppress(exceptions.FileNotFoundError):
            await driver.list_directory("")

    return probe


def free_space(storage: StorageConfig) -> Probe:
    """Free space on the filesystem driver's volume at or above `storage.minfree`: below it uploads answer 507."""
    directory = str(storage.options["rootdirectory"])
    minfree = storage.minfree
    assert minfree is not None

    async def probe() -> None:
        disk = await asyncio.to_thread(os.statvfs, directory)
        free, total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        floor = space_floor(minfree, total)
        if free < floor:
            raise OSError(f"{free} bytes free, below storage.minfree ({minfree}, {floor} bytes): uploads are refused")

    return probe


def database(store: AsyncMetadataStore, expected_revision: str | None, writes: bool = True) -> Probe:
    """The metadata database answers a query, its schema is the one this registry was built for, it can take writes
    (`refuses_writes`, unless `writes` is False: a registry in read-only mode needs none; a read-only file or
    server answers reads while every push is refused 503), and its writes
    are not stuck behind SQLite's write gate (a process stopped while holding it: reads still answer, every write
    is refused 503 after twice the lock timeout)."""
    gate, patience = store.sync.gate, 2 * store.sync.lock_timeout

    async def probe() -> None:
        if gate is not None and (waited := gate.waited()) > patience:
            raise RuntimeError(
                f"writes have waited {waited:.0f} s for the database's write gate ({gate.path}): a stopped process "
                "holds it"
            )
        revision = await store.schema_revision()
        if revision != expected_revision:
            raise RuntimeError(
                f"the database schema is at revision {revision}, this registry's is {expected_revision} (another "
                "version migrated it, or it was never migrated)"
            )
        if writes and (refused := await store.refuses_writes()) is not None:  # reads answer, pushes would be 503
            raise RuntimeError(refused)

    return probe


def file_absent(path: str) -> Probe:
    """Distribution's file check: unhealthy while something exists at `path` (an operator's maintenance flag)."""

    async def probe() -> None:
        if await asyncio.to_thread(os.path.lexists, path):
            raise RuntimeError(f"file exists: {path}")

    return probe


def http_answers(uri: str, headers: Mapping[str, Sequence[str]], status: int, timeout: float) -> Probe:
    """Distribution's HTTP check: a HEAD request to `uri` answered with `status` (a redirect is followed, as Go's
    client does). A session per run: checks run seconds apart, and nothing is left open in between."""
    sent = [(name, value) for name, values in headers.items() for value in values]
    url = request_url(uri, headers)

    async def probe() -> None:
        limit = aiohttp.ClientTimeout(total=timeout or None)
        try:
            async with (
                aiohttp.ClientSession(timeout=limit) as session,
                session.head(url, headers=sent, allow_redirects=True) as answer,
            ):
                if answer.status != status:
                    raise RuntimeError(f"downstream service returned unexpected status: {answer.status}")
        except aiohttp.ClientError as error:  # shown on the debug listener and logged: without the URL's query
            raise RuntimeError(client_error_text(error)) from None

    return probe


def tcp_accepts(addr: str, timeout: float) -> Probe:
    """Distribution's TCP check: a connection to `addr` is accepted (and closed at once)."""
    host, port = split_addr(addr)

    async def probe() -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", port), timeout or None)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return probe


def check_name(uri: str) -> str:
    """An HTTP check's name: its URL without credentials or query (names are shown on the main port's `/readyz`)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
