"""An error after an answer's first bytes went out (storage failing mid-blob, a client gone) cuts the connection:
the client reads a body shorter than announced and never an error answer spliced into the bytes it is reading, as
aiohttp would write one given back to it. Over a real socket, with the registry's error middleware."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from docker_registry.server.http.errors import errors_middleware


def failing_midway(error: Exception) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10
        await response.prepare(request)
        await response.write(b"12345")
        raise error

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/blob", handler)
    return app


async def answer(server: TestServer) -> bytes:
    """Every byte the server sends to one GET, up to its closing the connection (or 5 s)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /blob HTTP/1.1\r\nHost: test\r\n\r\n")
    received = b""
    try:
        while piece := await asyncio.wait_for(reader.read(65536), 5):
            received += piece
    finally:
        writer.close()
    return received


@pytest.mark.parametrize(
    ("error", "logged"), [(OSError("storage read failed"), True), (ConnectionResetError("the client went away"), False)]
)
async def test_an_error_after_the_first_bytes_closes_the_connection_with_the_body_short(
    error: Exception, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with TestServer(failing_midway(error)) as server:
        with caplog.at_level(logging.ERROR, logger="docker_registry.server.http"):
            received = await answer(server)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 10" in head
    assert body == b"12345"  # then the end of the connection: nothing spliced in
    cut = [record for record in caplog.records if "cut short" in record.getMessage()]
    assert len(cut) == (1 if logged else 0)
