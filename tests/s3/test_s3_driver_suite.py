"""The S3 driver against the shared driver suite, on a real moto server process on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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

    async def test_writer_resumes_past_the_part_minimum(self, driver: Driver) -> None:
        """Objects of 5 MiB and more are continued by server-side copies of their parts (the suite's writer tests
        stay under 5 MiB, where the stored bytes are read back instead); 11 MiB copies as parts of 5 and 6 MiB,
        since only the last part may be under S3's minimum."""
        pieces = [payload(n, seed=n) for n in (6 * MiB, 5 * MiB + 3, 17, 2 * MiB)]
        written = b""
        for i, piece in enumerate(pieces):
            writer = await driver.writer("uploads/big/data", append=i > 0)
            assert writer.size == len(written)
            await writer.write(piece)
            await (writer.commit() if i == len(pieces) - 1 else writer.close())
            written += piece
            assert await driver.get_size("uploads/big/data") == len(written)
        assert await driver.get_content("uploads/big/data") == written
