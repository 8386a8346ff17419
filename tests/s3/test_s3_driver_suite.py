"""The S3 driver against the shared driver suite, on a real moto server process on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from docker_registry.drivers.s3 import Driver
from docker_registry.testing import DriverTestSuite
from s3_server import shared_server


class TestS3Driver(DriverTestSuite):
    concurrent_rounds = 30
    """Fewer rounds than on a disk: each is several HTTP round trips to the S3 server."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[Driver]:
        server = shared_server()
        driver = Driver(server.options(server.bucket(), rootdirectory="/registry/root", chunksize=5 * 1024 * 1024))
        await driver.exists("warm-up")  # the client loads botocore's S3 model (~10 MiB, once) outside the memory test
        yield driver
        await driver.close()
