"""Retries with backoff: an S3 endpoint that answers 503 SlowDown, or 500, a few times before it answers well is
ridden over; one that keeps failing is reported, after a bounded number of attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from docker_registry.core import exceptions
from docker_registry.drivers import s3
from docker_registry.drivers.s3 import MAX_ATTEMPTS, Driver

SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
INTERNAL = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"


class FlakyS3:
    """Answers HEAD/GET of one object, after failing the first `failures` requests with `status`."""

    def __init__(self, failures: int, status: int, body: bytes) -> None:
        self.failures, self.status, self.body = failures, status, body
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failures:
            return web.Response(status=self.status, body=self.body, content_type="application/xml")
        if request.method == "HEAD":
            return web.Response(status=200, headers={"Content-Length": "5"})
        return web.Response(body=b"hello", content_type="application/octet-stream")


async def serve(flaky: FlakyS3) -> AsyncIterator[Driver]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    driver = Driver(
        {
            "bucket": "b",
            "region": "us-east-1",
            "regionendpoint": f"http://127.0.0.1:{port}",
            "accesskey": "k",
            "secretkey": "s",
            "forcepathstyle": True,
        }
    )
    try:
        yield driver
    finally:
        await driver.close()
        await runner.cleanup()


@pytest.mark.parametrize(("status", "body"), [(503, SLOW_DOWN), (500, INTERNAL)])
async def test_throttling_and_5xx_are_retried(status: int, body: bytes) -> None:
    flaky = FlakyS3(failures=2, status=status, body=body)
    async for driver in serve(flaky):
        assert await driver.get_content("object") == b"hello"
        assert flaky.requests == 3


async def test_a_lasting_failure_ends_after_bounded_attempts() -> None:
    flaky = FlakyS3(failures=100, status=503, body=SLOW_DOWN)
    async for driver in serve(flaky):
        with pytest.raises(exceptions.UnreachableError, match="SlowDown"):
            await driver.get_content("object")
        assert flaky.requests == MAX_ATTEMPTS


ACCESS_DENIED = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
NO_SUCH_BUCKET = b"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"


@pytest.mark.parametrize(
    ("status", "body", "code"), [(403, ACCESS_DENIED, "AccessDenied"), (404, NO_SUCH_BUCKET, "NoSuchBucket")]
)
async def test_a_bucket_or_credentials_refused_is_unavailable_not_an_error_of_the_request(
    status: int, body: bytes, code: str
) -> None:
    """The bucket deleted or the keys revoked while the registry runs: every storage call raised botocore's own
    error, which the server answered with 500 and a traceback (S3 probe); now the driver's UnreachableError (503),
    naming the code. Not retried: no attempt cures it."""
    refusing = FlakyS3(failures=100, status=status, body=body)
    async for driver in serve(refusing):
        with pytest.raises(exceptions.UnreachableError, match=code):
            await driver.get_content("object")
        with pytest.raises(exceptions.UnreachableError, match=code):
            await driver.put_content("object", b"bytes")
        if status == 403:  # a HEAD's answer carries no code: its status says it
            with pytest.raises(exceptions.UnreachableError, match="403"):
                await driver.stat("object")


async def test_a_put_to_an_endpoint_that_never_answers_ends_within_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """botocore sent uploads with `Expect: 100-continue`, and the wait for the "continue" is outside the read
    timeout: an endpoint that accepted the connection and never answered held a PUT (and the client's request)
    forever (S3 probe). A real listening socket that reads everything and answers nothing."""
    monkeypatch.setattr(s3, "READ_TIMEOUT", 1)
    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 1)

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    options = {"bucket": "b", "regionendpoint": f"http://127.0.0.1:{port}", "accesskey": "k", "secretkey": "s"}
    driver = Driver({**options, "region": "us-east-1", "forcepathstyle": True})
    try:
        with pytest.raises(exceptions.UnreachableError):
            await asyncio.wait_for(driver.put_content("object", b"bytes"), 20)
    finally:
        await driver.close()
        silent.close()
