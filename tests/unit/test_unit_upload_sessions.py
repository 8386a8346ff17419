"""Upload sessions in the registry logic, with the real file driver and SQLite: states a client cannot produce
over HTTP alone (a process that died mid-chunk, a session claimed by another writer)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from docker_registry.core.digest import parse_digest
from docker_registry.drivers.file import Driver
from docker_registry.server.errors import RANGE_INVALID, RegistryError
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.uploads import Uploads, upload_path


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Uploads, MetadataStore, Driver]:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    driver = Driver({"rootdirectory": str(tmp_path / "data")})
    return Uploads(store, driver), store, driver


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_bytes_beyond_the_recorded_size_are_reported_not_mixed_in(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    assert await uploads.append("repo", upload.id, body(b"abc"), start=0) == 3
    crashed = await driver.writer(upload_path(upload.id), append=True)  # a worker died after writing, unrecorded
    await crashed.write(b"xyz")
    await crashed.close()
    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, body(b"new"), start=3)
    assert info.value.error is RANGE_INVALID
    assert info.value.headers["Range"] == "0-5"
    assert store.upload(upload.id).size == 6, "the client resumes from what storage holds"


async def test_a_claimed_session_refuses_a_second_writer(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = parts
    upload = await uploads.start("repo")
    assert store.claim_upload(upload.id, "repo", 0, "another-request")
    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, body(b"data"), start=0)
    assert info.value.error is RANGE_INVALID
    store.release_upload(upload.id, "another-request", 0)
    assert await uploads.append("repo", upload.id, body(b"data"), start=0) == 4


async def test_session_continued_by_a_process_without_its_hash(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"first "), start=0)
    other_process = Uploads(store, driver)
    await other_process.append("repo", upload.id, body(b"second"), start=6)
    digest = parse_digest("sha256:" + hashlib.sha256(b"first second").hexdigest())
    await other_process.complete("repo", upload.id, digest, None)
    assert await driver.get_content("blobs/sha256/" + digest.encoded[:2] + f"/{digest.encoded}/data") == b"first second"
    assert store.blob_size("repo", str(digest)) == 12
    assert store.upload(upload.id) is None
