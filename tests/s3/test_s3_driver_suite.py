"""The S3 driver against the shared driver suite, on a real moto server process on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from docker_registry.drivers import s3
from docker_registry.drivers.s3 import Driver
from docker_registry.testing import DriverTestSuite
from docker_registry.testing.driver_suite import payload
from s3_server import shared_server

MiB = 1024 * 1024


class TestS3Driver(DriverTestSuite):
    concurrent_rounds = 30
    """Fewer rounds than on a disk: each is several HTTP round trips to the S3 server."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[Driver]:
        server = shared_server()
        driver = Driver(
            server.options(
                server.bucket(),
                rootdirectory="/registry/root",
                chunksize=5 * MiB,
                multipartcopythresholdsize=5 * MiB,  # moves of the suite's bigger objects take the multipart copy
                multipartcopychunksize=5 * MiB,
            )
        )
        await driver.exists("warm-up")  # the client loads botocore's S3 model (~10 MiB, once) outside the memory test
        yield driver
        await driver.close()

    async def test_writer_appending_to_a_plain_object_copies_it_server_side(self, driver: Driver) -> None:
        """An object of 5 MiB and more that is not a session (written whole) is continued by server-side copies of
        it as the first parts: 11 MiB copies as parts of 5 and 6 MiB, since only the last part may be small."""
        first = payload(11 * MiB, seed=1)
        await driver.put_content("objects/big", first)
        writer = await driver.writer("objects/big", append=True)
        assert writer.size == len(first)
        await writer.write(b"appended")
        await writer.commit()
        assert await driver.get_content("objects/big") == first + b"appended"
        assert await multipart_uploads(driver) == []

    async def test_a_chunked_upload_is_one_multipart_upload_across_nodes(self, driver: Driver) -> None:
        """Chunks alternate between two drivers (two nodes): all of them go into one multipart upload, and what
        the upload's own key holds between chunks is the tail under S3's 5 MiB minimum, never the bytes so far;
        the commit completes that upload and leaves none open."""
        other = Driver(driver.options)
        path, key = "uploads/one/data", driver._key("uploads/one/data")
        written, seen = b"", set()
        try:
            for i, size in enumerate((3 * MiB, 7 * MiB, 1, 6 * MiB, 12345)):
                node = (driver, other)[i % 2]
                writer = await node.writer(path, append=i > 0)
                assert writer.size == len(written)
                piece = payload(size, seed=i)
                await writer.write(piece)
                await writer.close()
                written += piece
                uploads = await multipart_uploads(driver)
                seen.update(upload_id for k, upload_id in uploads if k == key)
                assert len(uploads) == len(seen) <= 1
                assert await driver.get_size(path) < 5 * MiB  # the tail, with the session's state
            assert len(seen) == 1
            last = await other.writer(path, append=True)
            await last.commit()
            assert await driver.get_content(path) == written
            assert await multipart_uploads(driver) == []
        finally:
            await other.close()

    async def test_removing_a_session_aborts_its_multipart_upload(self, driver: Driver) -> None:
        """What garbage collection does to an expired upload (it removes the upload's directory), and what
        `cancel` does, leaves no multipart upload behind to be billed."""
        for name in ("removed", "cancelled"):
            writer = await driver.writer(f"uploads/{name}/data")
            await writer.write(payload(6 * MiB + 1))
            await writer.close()
        assert len(await multipart_uploads(driver)) == 2
        await driver.remove("uploads/removed")
        writer = await driver.writer("uploads/cancelled/data", append=True)
        await writer.cancel()
        assert await multipart_uploads(driver) == []

    async def test_purge_temporary_aborts_only_uploads_no_session_names(self, driver: Driver) -> None:
        """A multipart upload a crashed writer left (here, begun by hand) is aborted once older than the limit; a
        live session's is not. An upload counts as old once its last part is (moto dates every upload's initiation
        in 2010, so here the part's date decides)."""
        session = await driver.writer("uploads/live/data")
        await session.write(payload(6 * MiB))
        await session.close()
        client = await driver._client()
        bucket, orphan_key = driver.settings.bucket, driver._key("blobs/orphan")
        orphan = await client.create_multipart_upload(Bucket=bucket, Key=orphan_key)
        await client.upload_part(
            Bucket=bucket, Key=orphan_key, UploadId=orphan["UploadId"], PartNumber=1, Body=b"x" * 1000
        )
        assert await driver.purge_temporary(time.time() - 3600) == (0, 0)  # its part is younger than an hour
        assert await driver.purge_temporary(time.time() + 60, dry_run=True) == (1, 1000)
        assert len(await multipart_uploads(driver)) == 2
        dead_writers_marker = driver._key(s3.LIVE_WRITES + "0" * 64)  # a writer killed before it removed it
        await client.put_object(Bucket=bucket, Key=dead_writers_marker, Body=b"")
        assert await driver.purge_temporary(time.time() + 60) == (1, 1000)
        assert [key for key, _ in await multipart_uploads(driver)] == [driver._key("uploads/live/data")]
        assert await live_markers(driver) == []
        resumed = await driver.writer("uploads/live/data", append=True)
        await resumed.commit()
        assert await driver.get_content("uploads/live/data") == payload(6 * MiB)

    async def test_a_slow_streamed_write_is_not_purged_between_its_parts(
        self, driver: Driver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A blob streamed whole (a PUT with its body) goes into a multipart upload a part (`chunksize`) at a time;
        a client slow enough sends its parts further apart than the age at which a collection purges uploads (a
        probe: at 4 KiB/s, one was aborted mid-body, the client got 503). The write marks itself alive meanwhile."""
        monkeypatch.setattr(s3, "HEARTBEAT_SECONDS", 0.2)
        first = payload(5 * MiB, seed=3)
        purged: list[tuple[int, int]] = []

        async def slowly() -> AsyncIterator[bytes]:
            yield first  # a whole part: the multipart upload begins
            await asyncio.sleep(3)
            purged.append(await driver.purge_temporary(time.time() - 1.5))  # the part is older than that
            yield b"the rest"

        assert await driver.stream_write("blobs/slow", slowly()) == len(first) + len(b"the rest")
        assert purged == [(0, 0)]
        assert await driver.get_content("blobs/slow") == first + b"the rest"
        assert await multipart_uploads(driver) == []
        assert await live_markers(driver) == [], "the write removes its marker"


async def live_markers(driver: Driver) -> list[str]:
    client = await driver._client()
    listed = await client.list_objects_v2(Bucket=driver.settings.bucket, Prefix=driver._key(s3.LIVE_WRITES))
    return [item["Key"] for item in listed.get("Contents", [])]


async def multipart_uploads(driver: Driver) -> list[tuple[str, str]]:
    """(key, upload id) of every multipart upload open in the driver's bucket."""
    client = await driver._client()
    listed = await client.list_multipart_uploads(Bucket=driver.settings.bucket)
    return [(upload["Key"], upload["UploadId"]) for upload in listed.get("Uploads", [])]
