"""Upload sessions in the registry logic, with the real file driver and SQLite: states a client cannot produce
over HTTP alone (a process that died mid-chunk, a session claimed by another writer)."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import hashlib
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from docker_registry.core import exceptions
from docker_registry.core.digest import blob_path, parse_digest
from docker_registry.drivers.file import Driver
from docker_registry.server.registry import uploads as uploads_module
from docker_registry.server.registry.errors import BLOB_UPLOAD_UNKNOWN, DIGEST_INVALID, RANGE_INVALID, RegistryError
from docker_registry.server.registry.process_identity import this_process
from docker_registry.server.registry.uploads import SMALL_CHUNK_MAX, Uploads, upload_path
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import EventRecord


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Uploads, MetadataStore, Driver]:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    driver = Driver({"rootdirectory": str(tmp_path / "data")})
    return Uploads(AsyncMetadataStore(store), driver), store, driver


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
    other_process = Uploads(AsyncMetadataStore(store), driver)
    await other_process.append("repo", upload.id, body(b"second"), start=6)
    digest = parse_digest("sha256:" + hashlib.sha256(b"first second").hexdigest())
    await other_process.complete("repo", upload.id, digest, None)
    assert await driver.get_content("blobs/sha256/" + digest.encoded[:2] + f"/{digest.encoded}/data") == b"first second"
    assert store.blob_size("repo", digest) == 12
    assert store.upload(upload.id) is None


async def test_large_session_finished_by_a_process_without_its_hash(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The stored bytes are hashed again, slice after slice (several, and one short at the end), all of them and in
    order, each while the next is read: the right digest publishes the blob, a digest missing the last byte is
    refused. (Hashing is slowed down so that a slice hashed without being waited for shows.)"""
    uploads, store, driver = parts
    hash_chunk = uploads_module._hash_chunk

    def slow_hash_chunk(hasher, chunk):  # type: ignore[no-untyped-def]
        async def slowly() -> None:
            await asyncio.sleep(0.02)
            if (hashing := hash_chunk(hasher, chunk)) is not None:
                await hashing

        return asyncio.ensure_future(slowly())

    monkeypatch.setattr(uploads_module, "_hash_chunk", slow_hash_chunk)
    data = bytes(range(256)) * (14 * 1024 + 7)  # 3.5 MiB and a bit: four read slices
    for digest, whole in ((_sha256(data[:-1]), False), (_sha256(data), True)):
        upload = await uploads.start("repo")
        await uploads.append("repo", upload.id, body(data[: 2 * 1024 * 1024], data[2 * 1024 * 1024 :]), start=0)
        other_process = Uploads(AsyncMetadataStore(store), driver)
        if not whole:
            with pytest.raises(RegistryError) as info:
                await other_process.complete("repo", upload.id, digest, None)
            assert info.value.error is DIGEST_INVALID
            continue
        await other_process.complete("repo", upload.id, digest, None)
        assert store.blob_size("repo", digest) == len(data)
        assert await driver.get_content(f"blobs/sha256/{digest.encoded[:2]}/{digest.encoded}/data") == data


async def test_a_streamed_session_is_finished_without_reading_it_again(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The running hash covers every chunk of a streamed body, the last one too (hashed after its write): the
    closing PUT in the same process verifies with it and reads nothing back."""
    uploads, store, _driver = parts
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB in three pieces
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(data[: 1 << 20], data[1 << 20 : 2 << 20], data[2 << 20 :]), start=0)

    async def no_second_read(*args: object) -> None:
        raise AssertionError("the bytes were hashed again")

    monkeypatch.setattr(uploads, "_rehash", no_second_read)
    await uploads.complete("repo", upload.id, _sha256(data), None)
    assert store.blob_size("repo", _sha256(data)) == len(data)


async def test_a_failed_write_leaves_no_running_hash_ahead_of_storage(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A chunk's write fails halfway (a full disk): the session records what storage holds (the writer once
    counted the whole chunk), and a running hash that had hashed the whole chunk would vouch for bytes storage
    does not hold. Only written bytes are hashed, so the closing PUT (the client believes the session holds all it
    sent) hashes what storage holds and refuses the digest of the whole, rather than publish a truncated blob."""
    from docker_registry.drivers import file as file_driver

    uploads, store, driver = parts
    data = bytes(range(256)) * (8 * 1024)  # 2 MiB: two slices of 1 MiB, the second cut off
    real = file_driver._write_and_start_writeback
    calls = 0

    def full_disk_on_the_second(f, data, *rest):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            f.write(data[: len(data) // 2])
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data, *rest)

    monkeypatch.setattr(file_driver, "_write_and_start_writeback", full_disk_on_the_second)
    upload = await uploads.start("repo")
    mib = 1024 * 1024
    with pytest.raises(OSError, match="No space left"):
        await uploads.append("repo", upload.id, body(data[:mib], data[mib:]), start=0)
    assert store.upload(upload.id).size == mib + mib // 2, "what storage holds: the first slice, half the second"
    monkeypatch.setattr(file_driver, "_write_and_start_writeback", real)
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, _sha256(data), None)
    assert info.value.error is DIGEST_INVALID
    assert store.blob_size("repo", _sha256(data)) is None
    assert not await driver.exists(f"blobs/sha256/{_sha256(data).encoded[:2]}/{_sha256(data).encoded}/data")


def _dead_process() -> str:
    """The identity a claim would carry for a process of this host that has exited."""
    child = subprocess.Popen(["true"])
    start = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    child.wait()
    mine = this_process()
    assert mine is not None, "needs Linux /proc"
    boot, namespace = mine.split("/")[:2]
    return f"{boot}/{namespace}/{child.pid}/{start}"


async def test_a_dead_writers_claim_is_taken_over_at_the_stored_size(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    assert await uploads.append("repo", upload.id, body(b"abc"), start=0) == 3
    assert store.claim_upload(upload.id, "repo", 3, "killed-request", _dead_process())
    crashed = await driver.writer(upload_path(upload.id), append=True)  # part of its chunk reached storage
    await crashed.write(b"de")
    await crashed.close()
    status = await uploads.get("repo", upload.id)
    assert status.size == 5, "the status tells where to continue"
    assert await uploads.append("repo", upload.id, body(b"f"), start=5) == 6
    await uploads.complete("repo", upload.id, parse_digest("sha256:" + hashlib.sha256(b"abcdef").hexdigest()), None)
    assert store.blob_size("repo", parse_digest("sha256:" + hashlib.sha256(b"abcdef").hexdigest())) == 6


async def test_a_live_or_foreign_writers_claim_still_excludes(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = parts
    upload = await uploads.start("repo")
    for claimant in (this_process(), "other-boot/pid:[1]/1/1"):
        assert store.claim_upload(upload.id, "repo", 0, "writer", claimant)
        with pytest.raises(RegistryError) as info:
            await uploads.append("repo", upload.id, body(b"x"), start=0)
        assert info.value.error is RANGE_INVALID
        assert store.release_upload(upload.id, "writer", 0)


async def test_delete_while_the_last_chunk_streams(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    upload = await uploads.start("repo")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await uploads.cancel(await uploads.get("repo", upload.id))  # DELETE arrives mid-body
        yield b"second"

    digest = parse_digest("sha256:" + hashlib.sha256(b"firstsecond").hexdigest())
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, digest, chunks(), start=0)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN
    assert store.blob_size("repo", digest) is None
    assert store.upload(upload.id) is None
    assert not await driver.exists(f"uploads/{upload.id}")


async def test_delete_while_a_put_publishes(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reported race: DELETE between the PUT's verification and its move into place was a 500. Here on a driver
    that can only move by awaiting (`Base.mover` is None); the next test has the filesystem driver's own way."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"payload"), start=0)
    move = driver.move_if_absent
    monkeypatch.setattr(driver, "mover", lambda *args, **kwargs: None)

    async def move_after_delete(src: str, dst: str, sync_source: bool = False) -> bool:
        await uploads.cancel(await uploads.get("repo", upload.id))
        return await move(src, dst, sync_source)

    monkeypatch.setattr(driver, "move_if_absent", move_after_delete)
    digest = parse_digest("sha256:" + hashlib.sha256(b"payload").hexdigest())
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, digest, None)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN
    assert store.blob_size("repo", digest) is None, "a deleted session links nothing"
    assert store.upload(upload.id) is None
    assert not await driver.exists(f"uploads/{upload.id}")


@pytest.mark.parametrize("whole", [False, True], ids=["moved after a PATCH", "written whole"])
async def test_delete_while_a_put_publishes_in_the_writers_thread(parts, monkeypatch, whole) -> None:  # type: ignore[no-untyped-def]
    """The same race where the blob is published right after the claim in the database writer's thread, moved
    there (`Base.mover`) or, for a PUT with the whole blob, written there (`Base.putter`): the DELETE commits
    between the claim and the publication, so the PUT's link finds the session gone."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    if not whole:
        await uploads.append("repo", upload.id, body(b"payload"), start=0)
    accessor = "putter" if whole else "mover"
    make, published = getattr(driver, accessor), []

    def after_delete(*args, **kwargs):  # type: ignore[no-untyped-def]
        place = make(*args, **kwargs)
        assert place is not None

        def deleted_then_placed() -> bool:
            assert store.delete_upload(upload.id) is not None  # what a DELETE commits while the PUT holds the claim
            published.append(args[0])
            return place()

        return deleted_then_placed

    monkeypatch.setattr(driver, accessor, after_delete)
    digest = parse_digest("sha256:" + hashlib.sha256(b"payload").hexdigest())
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, digest, body(b"payload") if whole else None)
    assert published, "the blob was published where the claim was committed"
    assert info.value.error is BLOB_UPLOAD_UNKNOWN
    assert store.blob_size("repo", digest) is None, "a deleted session links nothing"
    assert store.upload(upload.id) is None
    assert not await driver.exists(f"uploads/{upload.id}")


@pytest.mark.parametrize("whole", [False, True], ids=["after a PATCH", "with the whole blob"])
async def test_a_put_links_in_the_writers_thread_with_its_events_made_in_the_requests_context(parts, whole) -> None:  # type: ignore[no-untyped-def]
    """A closing PUT on a new blob, without a body after a PATCH or with the whole blob, makes one trip to the
    database writer: claim and pin, move (or write), then the link in the writer's next batch (`Followup`). Its
    events are made there, in the request's context (they name the request), and are stored with the link."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    if not whole:
        await uploads.append("repo", upload.id, body(b"payload"), start=0)
    writes = uploads._store._writes
    submit, trips = writes.submit, []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        trips.append(args)
        return submit(*args, **kwargs)

    writes.submit = counted
    request = contextvars.ContextVar("request")
    request.set("the PUT's request")
    made = []

    def events(size: int) -> list[EventRecord]:
        made.append((request.get(None), size))
        return [EventRecord(time.time(), "{}")]

    digest = parse_digest("sha256:" + hashlib.sha256(b"payload").hexdigest())
    await uploads.complete("repo", upload.id, digest, body(b"payload") if whole else None, events=events)
    assert len(trips) == 1, "claim, move and link in one trip to the writer"
    assert made == [("the PUT's request", 7)]
    assert store.blob_size("repo", digest) == 7
    assert store.upload(upload.id) is None
    assert [event.payload for event in store.events_after(0, 10)] == ["{}"]
    assert await driver.get_content(blob_path(digest)) == b"payload"
    assert not await driver.exists(f"uploads/{upload.id}")


async def test_a_link_that_fails_in_the_writers_thread_is_the_puts_error_and_keeps_no_hash(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """The database failing the link that follows the move (`Followup`): the PUT gets the database's error (a 503
    at the HTTP layer), nothing is linked, and the running hash kept from the PATCH goes (the bytes it hashed were
    moved already)."""
    uploads, store, _driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"payload"), start=0)
    assert upload.id in uploads._hashers

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(store, "finish_upload", failing)
    digest = parse_digest("sha256:" + hashlib.sha256(b"payload").hexdigest())
    with pytest.raises(sa.exc.OperationalError):
        await uploads.complete("repo", upload.id, digest, None)
    assert upload.id not in uploads._hashers
    assert store.blob_size("repo", digest) is None


async def test_vanished_upload_data_is_upload_unknown(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, _store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"abc"), start=0)
    await driver.remove(f"uploads/{upload.id}")
    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, body(b"d"), start=3)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN
    other_process = Uploads(
        AsyncMetadataStore(parts[1]), parts[2]
    )  # no running hash: the bytes are read again, and are gone
    with pytest.raises(RegistryError) as info:
        await other_process.complete("repo", upload.id, parse_digest("sha256:" + "0" * 64), None)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN


async def test_a_slow_writer_keeps_its_claim_by_renewing_it(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    store.writer_lease = 0.4
    upload = await uploads.start("repo")
    other_node = Uploads(AsyncMetadataStore(store), driver)

    async def slow() -> AsyncIterator[bytes]:
        yield b"abc"
        await asyncio.sleep(1.0)  # well past the lease: only renewals keep the claim
        with pytest.raises(RegistryError) as info:
            await other_node.append("repo", upload.id, body(b"zzz"), start=0)
        assert info.value.error is RANGE_INVALID
        yield b"def"

    assert await uploads.append("repo", upload.id, slow(), start=0) == 6
    assert await driver.get_content(upload_path(upload.id)) == b"abcdef"


async def test_claims_held_at_once_are_all_renewed_and_the_renewing_stops_when_none_is(parts) -> None:  # type: ignore[no-untyped-def]
    """One task renews every claim of this worker: slow writers of two sessions, one of them starting later, keep
    both; once none is held the task ends, so an idle worker writes nothing."""
    uploads, store, driver = parts
    store.writer_lease = 0.4
    first, second = await uploads.start("repo"), await uploads.start("repo")
    other_node = Uploads(AsyncMetadataStore(store), driver)

    async def slow(upload_id: str, pause: float) -> AsyncIterator[bytes]:
        yield b"abc"
        await asyncio.sleep(pause)  # well past the lease: only renewals keep the claim
        with pytest.raises(RegistryError) as info:
            await other_node.append("repo", upload_id, body(b"zzz"), start=0)
        assert info.value.error is RANGE_INVALID
        yield b"def"

    async def later() -> int:
        await asyncio.sleep(0.3)
        return await uploads.append("repo", second.id, slow(second.id, 0.8), start=0)

    assert await asyncio.gather(uploads.append("repo", first.id, slow(first.id, 1.0), start=0), later()) == [6, 6]
    assert await driver.get_content(upload_path(first.id)) == b"abcdef"
    assert await driver.get_content(upload_path(second.id)) == b"abcdef"
    await asyncio.sleep(0.2)  # more than an eighth of the lease: the renewing task sees nothing held
    assert not [t for t in asyncio.all_tasks() if "_sweep" in repr(t.get_coro())]


async def test_a_claim_nobody_renews_expires_with_its_lease(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = parts
    store.writer_lease = 0.3
    upload = await uploads.start("repo")
    assert store.claim_upload(upload.id, "repo", 0, "writer-on-a-dead-node", "other-boot/pid:[1]/1/1")
    with pytest.raises(RegistryError):
        await uploads.append("repo", upload.id, body(b"x"), start=0)
    await asyncio.sleep(0.4)
    assert await uploads.append("repo", upload.id, body(b"x"), start=0) == 1


def _sha256(data: bytes):  # type: ignore[no-untyped-def]
    return parse_digest("sha256:" + hashlib.sha256(data).hexdigest())


async def test_put_on_another_process_verifies_the_stored_bytes_before_claiming(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """skopeo's PUT lands on another worker than its PATCH for half the blobs: that worker hashes the small
    session as storage holds it, then claims and pins in one write; nothing is read again after the claim."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"layer bytes"), start=0)
    other_process = Uploads(AsyncMetadataStore(store), driver)

    async def no_second_read(*args: object) -> None:
        raise AssertionError("the bytes were hashed again after the claim")

    monkeypatch.setattr(other_process, "_rehash", no_second_read)
    await other_process.complete("repo", upload.id, _sha256(b"layer bytes"), None)
    assert store.blob_size("repo", _sha256(b"layer bytes")) == 11
    assert (
        await driver.get_content(
            "blobs/sha256/" + _sha256(b"layer bytes").encoded[:2] + "/" + _sha256(b"layer bytes").encoded + "/data"
        )
        == b"layer bytes"
    )
    assert store.upload(upload.id) is None
    assert not await driver.exists(f"uploads/{upload.id}")


async def test_put_on_another_process_reads_a_small_session_inside_its_claim(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """On the filesystem driver the small session is read, hashed and claimed in one write (`Base.unfinished_reader`
    inside `claim_upload_pinned`), not read by a call of its own first; a larger one is read the usual way."""
    uploads, store, driver = parts
    other_process = Uploads(AsyncMetadataStore(store), driver)
    read_apart: list[str] = []
    read_unfinished = driver.read_unfinished

    async def counted(path: str, limit: int) -> bytes | None:
        read_apart.append(path)
        return await read_unfinished(path, limit)

    monkeypatch.setattr(driver, "read_unfinished", counted)
    claim_upload_pinned = store.claim_upload_pinned
    claims: list[str] = []

    def counted_claim(upload_id, repository, size, *args):  # type: ignore[no-untyped-def]
        if callable(size):  # a read inside the claim's transaction
            claims.append(upload_id)
        return claim_upload_pinned(upload_id, repository, size, *args)

    monkeypatch.setattr(store, "claim_upload_pinned", counted_claim)
    small, large = b"small layer", bytes(range(256)) * 400  # 102,400 bytes: more than a small chunk
    for data in (small, large):
        upload = await uploads.start("repo")
        await uploads.append("repo", upload.id, body(data[:50_000], data[50_000:]), start=0)
        await other_process.complete("repo", upload.id, _sha256(data), None)
        assert store.blob_size("repo", _sha256(data)) == len(data)
        digest = _sha256(data).encoded
        assert await driver.get_content(f"blobs/sha256/{digest[:2]}/{digest}/data") == data
        assert store.upload(upload.id) is None
        if data is small:
            assert claims == [upload.id], "read inside the claim's write"
            assert read_apart == [], "and only there"
        else:
            assert read_apart == [f"uploads/{upload.id}"], "a larger session is read apart, then claimed"


async def test_put_on_another_process_never_publishes_unrecorded_bytes(parts) -> None:  # type: ignore[no-untyped-def]
    """A killed writer left bytes the session never recorded: hashing storage before the claim sees them, so the
    claim at that size fails and the PUT goes the careful way (claim, then verify what the session holds)."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"abc"), start=0)
    crashed = await driver.writer(upload_path(upload.id), append=True)
    await crashed.write(b"xyz")
    await crashed.close()
    other_process = Uploads(AsyncMetadataStore(store), driver)
    with pytest.raises(RegistryError) as info:
        await other_process.complete("repo", upload.id, _sha256(b"abc"), None)
    assert info.value.error is DIGEST_INVALID
    assert store.blob_size("repo", _sha256(b"abc")) is None
    assert not await driver.exists("blobs/sha256/" + _sha256(b"abc").encoded[:2])


async def test_put_on_another_process_waits_for_no_claim_of_a_busy_session(parts) -> None:  # type: ignore[no-untyped-def]
    """Bytes hashed without a claim count only if the session is idle: while another request holds it, the PUT
    is refused as before and the session is left to its writer."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"abc"), start=0)
    assert store.claim_upload(upload.id, "repo", 3, "writer", this_process())
    other_process = Uploads(AsyncMetadataStore(store), driver)
    with pytest.raises(RegistryError) as info:
        await other_process.complete("repo", upload.id, _sha256(b"abc"), None)
    assert info.value.error is RANGE_INVALID
    assert store.blob_size("repo", _sha256(b"abc")) is None
    assert store.upload(upload.id).writer == "writer"
    assert store.release_upload(upload.id, "writer", 3)
    await other_process.complete("repo", upload.id, _sha256(b"abc"), None)
    assert store.blob_size("repo", _sha256(b"abc")) == 3


async def _breaks_off() -> AsyncIterator[bytes]:
    """A body of which 7 bytes arrive before the client goes away."""
    yield b"arrived"
    raise ConnectionResetError("the client went away")


async def test_a_small_body_that_breaks_off_keeps_what_arrived(parts) -> None:  # type: ignore[no-untyped-def]
    """A small PATCH is received whole before it is stored in one step; if the client goes away mid-body, what
    arrived is still stored and recorded, as a streamed chunk's would be: the client resumes from there."""
    uploads, store, _driver = parts
    upload = await uploads.start("repo")

    with pytest.raises(ConnectionResetError):
        await uploads.append("repo", upload.id, _breaks_off(), start=0)
    assert store.upload(upload.id).size == 7
    assert store.upload(upload.id).writer is None, "the claim is released"
    assert await uploads.append("repo", upload.id, body(b" and the rest"), start=7) == 20
    await uploads.complete("repo", upload.id, _sha256(b"arrived and the rest"), None)
    assert store.blob_size("repo", _sha256(b"arrived and the rest")) == 20


async def test_bodies_around_the_small_size_store_exactly_their_bytes(parts) -> None:  # type: ignore[no-untyped-def]
    """Up to SMALL_CHUNK_MAX in one step, beyond it streamed (with the pieces already received first)."""
    uploads, store, driver = parts
    for size in (0, 1, SMALL_CHUNK_MAX - 1, SMALL_CHUNK_MAX, SMALL_CHUNK_MAX + 1, 3 * SMALL_CHUNK_MAX + 5):
        data = bytes(i % 251 for i in range(size))
        upload = await uploads.start("repo")
        pieces = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]
        assert await uploads.append("repo", upload.id, body(*pieces), start=0) == size
        assert await driver.get_content(upload_path(upload.id)) == data
        await uploads.complete("repo", upload.id, _sha256(data), body(b""))
        assert store.blob_size("repo", _sha256(data)) == size


class _Writes:
    """The store's session writes a request made, by name."""

    def __init__(self, store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("claim_upload", "claim_upload_pinned", "pin_blob", "release_upload"):
            monkeypatch.setattr(store, name, self._recording(name, getattr(store, name)))

    def _recording(self, name: str, real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls.append(name)
            return real(*args, **kwargs)

        return call


async def test_a_put_with_the_whole_small_blob_claims_and_pins_in_one_write(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """POST, then a PUT carrying the blob: the body is received and verified first, then the empty session is
    claimed and the blob pinned (at the body's size) in one write; the blob is published and linked."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    writes = _Writes(store, monkeypatch)
    data = bytes(range(256)) * 80
    await uploads.complete("repo", upload.id, _sha256(data), body(data[:5_000], data[5_000:]))
    assert writes.calls == ["claim_upload_pinned"]
    assert store.blob_size("repo", _sha256(data)) == len(data)
    assert (
        await driver.get_content("blobs/sha256/" + _sha256(data).encoded[:2] + f"/{_sha256(data).encoded}/data") == data
    )
    assert store.upload(upload.id) is None
    assert not await driver.exists(f"uploads/{upload.id}")


async def test_a_put_whose_body_is_not_its_digest_pins_nothing(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    writes = _Writes(store, monkeypatch)
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, _sha256(b"another blob"), body(b"these bytes"))
    assert info.value.error is DIGEST_INVALID
    assert "claim_upload_pinned" not in writes.calls
    assert "pin_blob" not in writes.calls
    assert store.upload(upload.id) is None, "a wrong digest ends the session, as before"
    assert store.known_blob_size(_sha256(b"these bytes")) is None
    assert not await driver.exists("blobs")


async def test_a_put_with_the_rest_of_a_session_is_verified_with_its_first_bytes(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """A PUT whose body is not the whole blob (a PATCH wrote the start, in this process or another) is claimed
    and verified as before, the pin after: the early claim and pin apply only to an empty session."""
    uploads, store, driver = parts
    writes = _Writes(store, monkeypatch)
    for finishing, rest in ((uploads, b"here"), (Uploads(AsyncMetadataStore(store), driver), b"elsewhere")):
        upload = await uploads.start("repo")
        assert await uploads.append("repo", upload.id, body(b"first "), start=0) == 6
        writes.calls.clear()
        await finishing.complete("repo", upload.id, _sha256(b"first " + rest), body(rest), start=6)
        assert writes.calls[-1] == "pin_blob", writes.calls
        assert store.blob_size("repo", _sha256(b"first " + rest)) == 6 + len(rest)


async def test_a_put_with_the_whole_blob_into_a_busy_session_is_refused(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = parts
    upload = await uploads.start("repo")
    assert store.claim_upload(upload.id, "repo", 0, "writer", this_process())
    with pytest.raises(RegistryError) as info:
        await uploads.complete("repo", upload.id, _sha256(b"blob"), body(b"blob"))
    assert info.value.error is RANGE_INVALID
    assert store.known_blob_size(_sha256(b"blob")) is None
    assert store.upload(upload.id).writer == "writer"


async def test_a_put_body_that_breaks_off_keeps_what_arrived(parts) -> None:  # type: ignore[no-untyped-def]
    uploads, store, _driver = parts
    upload = await uploads.start("repo")

    with pytest.raises(ConnectionResetError):
        await uploads.complete("repo", upload.id, _sha256(b"arrived and the rest"), _breaks_off())
    assert store.upload(upload.id).size == 7
    assert store.upload(upload.id).writer is None, "the claim is released"
    await uploads.complete("repo", upload.id, _sha256(b"arrived and the rest"), body(b" and the rest"), start=7)
    assert store.blob_size("repo", _sha256(b"arrived and the rest")) == 20


async def test_a_put_with_the_whole_blob_replaces_a_file_the_database_does_not_know(  # type: ignore[no-untyped-def]
    parts,
) -> None:
    """What a failed upload or an unfinished collection left at the blob's path is not taken for the blob."""
    uploads, store, driver = parts
    data = b"the verified layer"
    path = "blobs/sha256/" + _sha256(data).encoded[:2] + f"/{_sha256(data).encoded}/data"
    await driver.put_content(path, b"torn")
    upload = await uploads.start("repo")
    await uploads.complete("repo", upload.id, _sha256(data), body(data))
    assert await driver.get_content(path) == data
    assert store.blob_size("repo", _sha256(data)) == len(data)


@pytest.mark.parametrize("blocking", [True, False], ids=["in the writer's thread", "awaited"])
async def test_a_put_with_the_whole_blob_that_cannot_be_stored_leaves_the_session_empty(  # type: ignore[no-untyped-def]
    parts, monkeypatch, blocking
) -> None:
    """Storage failing under the PUT (a full disk), whether the driver writes in the database writer's thread
    (`Base.putter`) or by awaiting: nothing linked, the claim released and the session empty, so the client's PUT
    again succeeds."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    data = b"a small layer"

    def no_space() -> bool:
        raise OSError(28, "No space left on device")

    async def full_disk(path: str, data: bytes) -> bool:
        return no_space()

    if blocking:
        monkeypatch.setattr(driver, "putter", lambda path, data: no_space)
    else:
        monkeypatch.setattr(driver, "putter", lambda path, data: None)
        monkeypatch.setattr(driver, "put_if_absent", full_disk)
    with pytest.raises(OSError, match="No space"):
        await uploads.complete("repo", upload.id, _sha256(data), body(data))
    assert store.blob_size("repo", _sha256(data)) is None
    assert not await driver.exists(f"blobs/sha256/{_sha256(data).encoded[:2]}/{_sha256(data).encoded}/data")
    session = store.upload(upload.id)
    assert session.size == 0
    assert session.writer is None
    monkeypatch.undo()
    await uploads.complete("repo", upload.id, _sha256(data), body(data))
    assert store.blob_size("repo", _sha256(data)) == len(data)


async def test_a_claim_the_database_could_not_release_is_released_once_it_is_back(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """The database away when a chunk's request ended (a probe stopped PostgreSQL for 3 s): its claim stayed for the
    whole lease, and every chunk for a minute was refused as if another request were writing."""
    uploads, store, _driver = parts
    monkeypatch.setattr(uploads_module, "LATE_RELEASE_INTERVAL", 0.05)
    upload = await uploads.start("repo")
    real_release = uploads._store.release_upload
    failures = [sa.exc.OperationalError("UPDATE uploads", {}, Exception("server closed the connection"))]

    async def release_while_away(upload_id: str, token: str, size: int) -> bool:
        if failures:
            raise failures.pop()
        return await real_release(upload_id, token, size)

    monkeypatch.setattr(uploads._store, "release_upload", release_while_away)
    with pytest.raises(sa.exc.OperationalError):
        await uploads.append("repo", upload.id, body(b"abc"), start=0)
    await asyncio.sleep(0.3)  # the database is back: the claim is released in the background
    assert await uploads.append("repo", upload.id, body(b"def"), start=3) == 6
    assert store.upload(upload.id).size == 6


async def test_a_closing_put_whose_claim_the_database_could_not_release_is_released_once_it_is_back(  # type: ignore[no-untyped-def]
    parts, monkeypatch
) -> None:
    """A closing PUT that failed (the disk full) while the database was away: its claim stayed for the whole lease,
    and the client's PUT again was refused as if another request were writing."""
    uploads, store, driver = parts
    monkeypatch.setattr(uploads_module, "LATE_RELEASE_INTERVAL", 0.05)
    upload = await uploads.start("repo")
    data = b"a closing put"
    real_release, real_put = uploads._store.release_upload, driver.put_if_absent
    failures = [sa.exc.OperationalError("UPDATE uploads", {}, Exception("server closed the connection"))]

    async def release_while_away(upload_id: str, token: str, size: int) -> bool:
        if failures:
            raise failures.pop()
        return await real_release(upload_id, token, size)

    async def full_disk(path: str, data: bytes) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uploads._store, "release_upload", release_while_away)
    monkeypatch.setattr(driver, "putter", lambda path, data: None)
    monkeypatch.setattr(driver, "put_if_absent", full_disk)
    with pytest.raises(OSError, match="No space"):
        await uploads.complete("repo", upload.id, _sha256(data), body(data))
    monkeypatch.setattr(driver, "put_if_absent", real_put)  # room again
    await asyncio.sleep(0.3)  # the database is back: the claim is released in the background
    await uploads.complete("repo", upload.id, _sha256(data), body(data))
    assert store.blob_size("repo", _sha256(data)) == len(data)


async def test_a_delete_whose_data_storage_cannot_remove_still_ends_the_session(  # type: ignore[no-untyped-def]
    parts, monkeypatch, caplog
) -> None:
    """S3 unreachable during a DELETE: the session's row was gone, yet the answer was 503, and the retry the client
    was asked for answered 404 (S3 probe). The DELETE succeeds; the data is left to upload purging, logged."""
    uploads, store, driver = parts
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(b"left behind"), start=0)

    async def unreachable(path: str) -> None:
        raise exceptions.UnreachableError("S3 unreachable")

    monkeypatch.setattr(driver, "remove", unreachable)
    await uploads.cancel(await uploads.get("repo", upload.id))
    assert store.upload(upload.id) is None
    assert "storage kept its data, left to upload purging" in caplog.text
    with pytest.raises(RegistryError) as info:
        await uploads.get("repo", upload.id)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN
