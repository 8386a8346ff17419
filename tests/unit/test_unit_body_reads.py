"""Request bodies read by `http.body`: a body the connection has delivered whole is read without arming the pace
timer (a heap entry made and cancelled per read, twice per small blob); one still arriving is read under it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from docker_registry.server.config.schema import Config
from docker_registry.server.http import body
from docker_registry.server.http.context import CONFIG_KEY


def request_with(stream: StreamReader, length: int) -> web.Request:
    app = web.Application()
    app[CONFIG_KEY] = Config()
    headers = {"Content-Length": str(length)}
    return make_mocked_request("PUT", "/v2/repo/blobs/uploads/u", headers=headers, app=app, payload=stream)


def stream() -> StreamReader:
    protocol = mock.Mock(_reading_paused=False)
    return StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())


@pytest.fixture
def timers() -> Iterator[list[float | None]]:
    """Every pace timer armed (its deadline)."""
    armed: list[float | None] = []
    real = asyncio.timeout_at

    def recording(when: float | None) -> asyncio.Timeout:
        armed.append(when)
        return real(when)

    with mock.patch.object(asyncio, "timeout_at", recording):
        yield armed


async def test_a_body_delivered_whole_is_read_without_a_timer(timers: list[float | None]) -> None:
    content = stream()
    content.feed_data(b"x" * 20_000)
    content.feed_eof()
    received = [chunk async for chunk in body.chunks(request_with(content, 20_000))]
    assert b"".join(received) == b"x" * 20_000
    assert timers == []


async def test_a_body_still_arriving_is_read_under_the_pace_timer(timers: list[float | None]) -> None:
    content = stream()
    content.feed_data(b"x" * 10_000)
    request = request_with(content, 20_000)

    async def rest() -> None:
        await asyncio.sleep(0.01)
        content.feed_data(b"y" * 10_000)
        content.feed_eof()

    arriving = asyncio.ensure_future(rest())
    received = [chunk async for chunk in body.chunks(request)]
    await arriving
    assert b"".join(received) == b"x" * 10_000 + b"y" * 10_000
    assert timers, "the wait for the second half was timed"
    assert all(when is not None for when in timers)


def test_a_body_closed_after_the_next_requests_large_reads_ended_is_no_error() -> None:
    """A body abandoned mid-request (a 507 before it was read) is closed late, by the garbage collector: after the
    same connection's next request set and removed its own large reads. Removing them again raised
    AttributeError in that close (logged as an exception never retrieved)."""

    class Transport:
        max_size = 256 * 1024  # asyncio's selector transport's class default

    transport = Transport()
    request = mock.Mock(transport=transport)
    abandoned = body._large_reads(request)
    abandoned.__enter__()
    with body._large_reads(request):
        assert transport.max_size == body.BUFFER_SIZE
    abandoned.__exit__(None, None, None)
    assert transport.max_size == Transport.max_size
