"""The deliverer's plain HTTP/1.1 client (`notifications.post`) against a receiver whose answers are scripted byte
for byte: it sends the envelope unchanged with the endpoint's headers, keeps one connection while the receiver
allows it, reads every way a body can be framed, and hands redirects back to the caller (aiohttp follows them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from docker_registry.server.config.notifications import NotificationsConfig
from docker_registry.server.notifications.delivery import Deliverer
from docker_registry.server.notifications.post import Poster, PostFailed, Redirected, plain
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.store.models import Cursor

BODY = b'{"events":[{"id":"a","action":"pull"}]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Scripted:
    """Answers each request with the next of `answers`, and closes the connection after those in `close_after`."""

    answers: list[bytes]
    close_after: set[int] = field(default_factory=set)
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(int(line[15:]) for line in lines if line.lower().startswith(b"content-length:"))
                self.requests.append((head, await reader.readexactly(length)))
                number = len(self.requests) - 1
                writer.write(self.answers[number])
                await writer.drain()
                if number in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Scripted]]:
    servers: list[asyncio.Server] = []

    async def start(answers: list[bytes], close_after: set[int] | None = None) -> Scripted:
        receiver = Scripted(answers, close_after or set())
        server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
        receiver.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return receiver

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def test_posts_the_body_unchanged_with_the_endpoint_headers_on_one_connection(
    scripted: Callable[..., Any],
) -> None:
    receiver = await scripted([OK, OK, OK])
    poster = Poster(f"http://127.0.0.1:{receiver.port}/events?x=1", [("Authorization", "Bearer t"), ("X-A", "b")], 5)
    assert [await poster.post(BODY) for _ in range(3)] == [200, 200, 200]
    assert receiver.connections == 1
    head, body = receiver.requests[0]
    assert body == BODY
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /events?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{receiver.port}" in lines
    assert {"Authorization: Bearer t", "X-A: b", f"Content-Length: {len(BODY)}"} <= set(lines)
    poster.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["interim-100", "chunked", "no-content"],
)
async def test_every_framing_of_the_answer_is_read_and_the_connection_kept(
    scripted: Callable[..., Any], answer: bytes
) -> None:
    receiver = await scripted([answer, OK])
    poster = Poster(f"http://127.0.0.1:{receiver.port}/", [], 5)
    assert await poster.post(BODY) in (202, 204)
    assert await poster.post(BODY) == 200  # the answer was read to its end: the next one parses
    assert receiver.connections == 1
    poster.close()


async def test_a_connection_the_endpoint_closes_is_not_reused(scripted: Callable[..., Any]) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nbody until the connection ends",
        OK,  # the endpoint closes after this one while idle
        OK,
    ]
    receiver = await scripted(answers, close_after={0, 1, 2})
    poster = Poster(f"http://127.0.0.1:{receiver.port}/", [], 5)
    assert await poster.post(BODY) == 200
    assert await poster.post(BODY) == 200
    assert await poster.post(BODY) == 200
    await asyncio.sleep(0.05)  # the endpoint's close arrives while the connection is idle
    assert await poster.post(BODY) == 200  # seen before writing: no failure
    assert receiver.connections == 4
    poster.close()


async def test_failures_and_redirects_are_raised(scripted: Callable[..., Any]) -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"
    receiver = await scripted([redirect, b"junk\r\n\r\n"])
    poster = Poster(f"http://127.0.0.1:{receiver.port}/", [], 5)
    with pytest.raises(Redirected):
        await poster.post(BODY)
    with pytest.raises(PostFailed):
        await poster.post(BODY)  # not HTTP
    silent = await scripted([b""])  # takes the request, never answers
    with pytest.raises(PostFailed):
        await Poster(f"http://127.0.0.1:{silent.port}/", [], 0.2).post(BODY)
    assert not plain("https://example.com/")
    assert not plain("http://u:p@example.com/")
    assert plain("http://h:1/e")


async def test_the_deliverer_follows_a_redirect_with_aiohttp_from_then_on() -> None:
    received: list[bytes] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/new")

    async def new(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/old", moved)
    app.router.add_post("/new", new)
    server = TestServer(app)
    await server.start_server()
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": str(server.make_url("/old"))}]})

    class Store:
        def event_cursors(self, names: list[str]) -> dict[str, Cursor]:
            return {name: Cursor(0) for name in names}

    deliverer = Deliverer(settings, Store(), Stats.of(["e"]))  # type: ignore[arg-type]
    await deliverer._start_endpoints()
    try:
        for task in deliverer._tasks.values():
            task.cancel()
        assert await deliverer._post("e", BODY) == 200
        assert await deliverer._post("e", BODY) == 200
        assert received == [BODY, BODY]
        assert "e" not in deliverer._posters
    finally:
        await deliverer._stop_endpoints()
        await server.close()
