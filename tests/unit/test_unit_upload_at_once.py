"""A small chunk that has arrived whole is claimed, appended and released in one write (`Uploads._append_at_once`),
on a driver that can append without awaiting: the transaction's write lock is the claim. What a rolled-back
transaction (a batch run again, a commit that failed, a killed writer) leaves in storage beyond the recorded size
is counted as appended when it is that very chunk again, and is a RANGE_INVALID at the size storage holds
otherwise, as after a writer killed mid-chunk."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from docker_registry.core.digest import parse_digest
from docker_registry.drivers.file import Driver
from docker_registry.drivers.memory import Driver as MemoryDriver
from docker_registry.server.registry.errors import RANGE_INVALID, RegistryError
from docker_registry.server.registry.process_identity import this_process
from docker_registry.server.registry.upload_area import upload_path
from docker_registry.server.registry.uploads import Uploads
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _count_writes(store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"claim_upload": 0, "release_upload": 0, "append_small": 0}
    for name in counts:
        real = getattr(store, name)

        def counted(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return counts


async def test_a_chunk_that_has_arrived_is_one_write(file_uploads, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = file_uploads
    upload = await uploads.start("repo")
    counts = _count_writes(store, monkeypatch)
    assert await uploads.append("repo", upload.id, body(b"first "), start=0, arrived=True) == 6
    assert await uploads.append("repo", upload.id, body(b"second"), start=6, arrived=True) == 12
    assert counts == {"claim_upload": 0, "release_upload": 0, "append_small": 2}
    assert store.upload(upload.id).size == 12
    assert store.upload(upload.id).writer is None
    digest = parse_digest("sha256:" + hashlib.sha256(b"first second").hexdigest())
    await uploads.complete("repo", upload.id, digest, None)  # the running hash was kept
    assert store.blob_size("repo", digest) == 12


async def test_a_body_still_arriving_claims_first(file_uploads, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = file_uploads
    upload = await uploads.start("repo")
    counts = _count_writes(store, monkeypatch)
    assert await uploads.append("repo", upload.id, body(b"abc"), start=0) == 3
    assert counts == {"claim_upload": 1, "release_upload": 1, "append_small": 0}


async def test_a_driver_that_must_await_goes_the_usual_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    uploads = Uploads(AsyncMetadataStore(store), MemoryDriver())
    upload = await uploads.start("repo")
    counts = _count_writes(store, monkeypatch)
    assert await uploads.append("repo", upload.id, body(b"abc"), start=0, arrived=True) == 3
    assert counts == {"claim_upload": 1, "release_upload": 1, "append_small": 0}


async def test_a_busy_or_dead_writers_session_goes_the_usual_way(file_uploads) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = file_uploads
    upload = await uploads.start("repo")
    assert store.claim_upload(upload.id, "repo", 0, "another-request", this_process())
    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, body(b"x"), start=0, arrived=True)
    assert info.value.error is RANGE_INVALID
    assert store.release_upload(upload.id, "another-request", 0)
    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, body(b"x"), start=5, arrived=True)  # not where its bytes end
    assert info.value.error is RANGE_INVALID
    assert info.value.headers["Range"] == "0-0"


async def _rolled_back(uploads: Uploads, store: MetadataStore, driver: Driver) -> str:
    """A session holding b"abc" whose next write appended b"def" and was then rolled back (as a failed commit or a
    killed writer leaves it): the database still says 3 bytes and no claim, storage holds 6. Its id."""
    upload = await uploads.start("repo")
    assert await uploads.append("repo", upload.id, body(b"abc"), start=0, arrived=True) == 3
    appender = driver.appender(upload_path(upload.id))
    assert appender is not None

    def append_then_fail(claimed: int) -> tuple[bool, int]:
        appender(b"def", claimed)
        raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError):
        store.append_small((upload.id, "repo", 3, "token", this_process()), append_then_fail)
    assert (store.upload(upload.id).size, store.upload(upload.id).writer) == (3, None)
    assert await driver.get_content(upload_path(upload.id)) == b"abcdef"
    return upload.id


async def test_other_bytes_than_a_rolled_back_append_find_what_storage_holds(file_uploads) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = file_uploads
    upload_id = await _rolled_back(uploads, store, driver)
    with pytest.raises(RegistryError) as info:  # another chunk at 3: storage holds what the client did not send
        await uploads.append("repo", upload_id, body(b"xyz"), start=3, arrived=True)
    assert (info.value.error, info.value.headers["Range"], store.upload(upload_id).size) == (RANGE_INVALID, "0-5", 6)


async def test_the_same_chunk_sent_again_after_a_rollback_counts_once(file_uploads) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = file_uploads
    upload_id = await _rolled_back(uploads, store, driver)
    assert await uploads.append("repo", upload_id, body(b"def"), start=3, arrived=True) == 6  # the batch again
    assert await driver.get_content(upload_path(upload_id)) == b"abcdef"
    digest = parse_digest("sha256:" + hashlib.sha256(b"abcdef").hexdigest())
    await Uploads(AsyncMetadataStore(store), driver).complete("repo", upload_id, digest, None)
    assert store.blob_size("repo", digest) == 6


async def test_a_batch_run_again_appends_once(file_uploads) -> None:  # type: ignore[no-untyped-def]
    """A write of the same batch refuses, so the batch is rolled back and run again (each write in a savepoint):
    the chunk's append runs twice, its bytes are stored once."""
    uploads, store, driver = file_uploads
    upload = await uploads.start("repo")
    appender = driver.appender(upload_path(upload.id))
    assert appender is not None

    def append(claimed: int) -> tuple[bool, int]:
        found = appender(b"chunk", claimed)
        return (True, claimed + 5) if found == claimed else (False, found)

    def refuses() -> None:
        raise ValueError("refused")

    outcomes = store.run_batch(
        [lambda: store.append_small((upload.id, "repo", 0, "token", this_process()), append), refuses], durable=False
    )
    assert outcomes[0] == ((0, True, 5), None)
    assert isinstance(outcomes[1][1], ValueError)
    assert await driver.get_content(upload_path(upload.id)) == b"chunk"
    assert store.upload(upload.id).size == 5
