"""A finished upload is durable before it is linked: the blob's file and the directory holding its final name are
fsynced before the commit that makes the blob visible, so an acknowledged push survives a power loss.

Fault injection, with the real file driver and SQLite: `os.fsync` (and `os.fdatasync`) are wrapped to record which
file or directory each call made durable, and the store's `finish_upload` (the linking commit) to record when it
ran. A power loss can only be simulated this way: nothing a client sees over HTTP tells whether a file was fsynced.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docker_registry.core.digest import blob_path, parse_digest
from docker_registry.drivers.file import Driver
from docker_registry.server.registry.uploads import Uploads
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore


@dataclass(frozen=True)
class Synced:
    path: str
    inode: tuple[int, int]
    directory: bool
    entries: frozenset[str]
    """For a directory: the names in it when it was fsynced (a rename is durable only if it came before)."""


@dataclass(frozen=True)
class Linked:
    digest: str


class Recorder:
    def __init__(self) -> None:
        self.events: list[Synced | Linked] = []

    def synced(self, fd: int) -> None:
        st = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        directory = stat.S_ISDIR(st.st_mode)
        entries = frozenset(os.listdir(path)) if directory else frozenset()
        self.events.append(Synced(path, (st.st_dev, st.st_ino), directory, entries))

    def assert_durable_before_link(self, final: Path) -> None:
        """The final file's bytes (whatever name the file had then) and the directory entry of its final name
        were both fsynced before the blob was linked."""
        links = [i for i, e in enumerate(self.events) if isinstance(e, Linked)]
        assert len(links) == 1, self.events
        before = self.events[: links[0]]
        st = final.stat()
        file_syncs = [e for e in before if isinstance(e, Synced) and e.inode == (st.st_dev, st.st_ino)]
        assert file_syncs, f"the blob's data was not fsynced before it was linked: {self.events}"
        directory_syncs = [
            e
            for e in before
            if isinstance(e, Synced) and e.directory and e.path == str(final.parent) and final.name in e.entries
        ]
        assert directory_syncs, f"the directory of {final} was not fsynced after the rename, before the link: {before}"
        # the blob's directory (blobs/sha256/ab/<hex>/) was new: its own name, in its parent, must be durable too
        parent_syncs = [
            e
            for e in before
            if isinstance(e, Synced)
            and e.directory
            and e.path == str(final.parent.parent)
            and final.parent.name in e.entries
        ]
        assert parent_syncs, f"the new directory {final.parent} was not made durable in its parent: {before}"


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Uploads, Driver, Recorder, MetadataStore]]:
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs Linux /proc to name the fsynced files")
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    driver = Driver({"rootdirectory": str(tmp_path / "data")})
    recorder = Recorder()

    def observed(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            real(fd)
            recorder.synced(fd)

        return sync

    monkeypatch.setattr(os, "fsync", observed(os.fsync))
    if hasattr(os, "fdatasync"):
        monkeypatch.setattr(os, "fdatasync", observed(os.fdatasync))
    finish = store.finish_upload

    def finish_upload(upload_id: str, repository: str, digest: str, *args: Any) -> bool:
        recorder.events.append(Linked(digest))
        return finish(upload_id, repository, digest, *args)

    monkeypatch.setattr(store, "finish_upload", finish_upload)
    yield Uploads(AsyncMetadataStore(store), driver), driver, recorder, store
    store.close()


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _final(driver: Driver, data: bytes) -> tuple[Any, Path]:
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    return digest, Path(driver.root, blob_path(digest))


DATA = [os.urandom(700_000), os.urandom(300_000), b"tail"]
"""Big enough that the driver writes some chunks straight through, and asks for writeback on the way."""


async def test_monolithic_upload(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, driver, recorder, _store = parts
    digest, final = _final(driver, b"".join(DATA))
    await uploads.put_whole("repo", digest, body(*DATA))
    assert final.read_bytes() == b"".join(DATA)
    recorder.assert_durable_before_link(final)


async def test_chunked_upload_finished_by_an_empty_put(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, driver, recorder, _store = parts
    digest, final = _final(driver, b"".join(DATA))
    upload = await uploads.start("repo")
    offset = 0
    for chunk in DATA:
        offset = await uploads.append("repo", upload.id, body(chunk), start=offset)
    await uploads.complete("repo", upload.id, digest, None)
    assert final.read_bytes() == b"".join(DATA)
    recorder.assert_durable_before_link(final)


async def test_chunked_upload_finished_by_a_put_with_the_last_chunk(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, driver, recorder, _store = parts
    digest, final = _final(driver, b"".join(DATA))
    upload = await uploads.start("repo")
    offset = await uploads.append("repo", upload.id, body(DATA[0]), start=0)
    await uploads.complete("repo", upload.id, digest, body(*DATA[1:]), start=offset)
    assert final.read_bytes() == b"".join(DATA)
    recorder.assert_durable_before_link(final)


async def test_chunked_upload_finished_in_another_process(parts) -> None:  # type: ignore[no-untyped-def]
    """The finishing process never saw the chunks (no running hash): it hashes the stored bytes and syncs them."""
    uploads, driver, recorder, store = parts
    digest, final = _final(driver, b"".join(DATA))
    upload = await uploads.start("repo")
    offset = 0
    for chunk in DATA:
        offset = await uploads.append("repo", upload.id, body(chunk), start=offset)
    other_process = Uploads(AsyncMetadataStore(store), driver)
    await other_process.complete("repo", upload.id, digest, None)
    assert final.read_bytes() == b"".join(DATA)
    recorder.assert_durable_before_link(final)


async def test_empty_blob(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, driver, recorder, _store = parts
    digest, final = _final(driver, b"")
    upload = await uploads.start("repo")
    await uploads.complete("repo", upload.id, digest, None)
    assert final.read_bytes() == b""
    recorder.assert_durable_before_link(final)


async def test_small_blob_sent_whole_in_the_put(parts) -> None:  # type: ignore[no-untyped-def]
    """POST, then a PUT carrying a small blob (received whole, written without an fsync of its own): the link
    that publishes it fsyncs the file and the directories of its new name before the blob is linked."""
    uploads, driver, recorder, _store = parts
    data = os.urandom(20_000)
    digest, final = _final(driver, data)
    upload = await uploads.start("repo")
    await uploads.complete("repo", upload.id, digest, body(data[:8_000], data[8_000:]))
    assert final.read_bytes() == data
    recorder.assert_durable_before_link(final)
