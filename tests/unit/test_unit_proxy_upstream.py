"""How long the cache leaves an upstream alone after a 429 (`proxy.upstream`), and a token service that limits us,
against a fake upstream on a real socket."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time

import aiohttp
import pytest

from docker_registry.server.proxy.upstream import (
    THROTTLE_DEFAULT,
    THROTTLE_LONGEST,
    Upstream,
    UpstreamSettings,
    UpstreamThrottled,
    throttle_seconds,
)
from proxy_upstreams import raw_server


def test_retry_after_in_seconds_or_as_a_date_within_bounds() -> None:
    assert throttle_seconds("120") == 120
    assert throttle_seconds(" 7 ") == 7
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= throttle_seconds(in_a_minute) <= 61
    assert throttle_seconds(None) == THROTTLE_DEFAULT
    assert throttle_seconds("soon") == THROTTLE_DEFAULT
    assert throttle_seconds("0") == 1  # asking again at once would only add to the count
    assert throttle_seconds("-5") == THROTTLE_DEFAULT  # not a delay RFC 9110 allows
    assert throttle_seconds("9" * 400) == THROTTLE_DEFAULT  # nor one anyone means (and no float holds it)
    assert throttle_seconds(email.utils.formatdate(time.time() - 600, usegmt=True)) == 1
    assert throttle_seconds("999999999999") == THROTTLE_LONGEST


def test_a_token_service_answering_429_leaves_the_upstream_alone_for_its_retry_after() -> None:
    """The token request is the first an anonymous pull from Docker Hub makes, and it is limited too: the error
    says so and when to come back, and no request reaches the upstream or its token service until then."""
    seen: list[str] = []

    def answer(conn: socket.socket, head: str) -> None:
        line = head.split("\r\n", 1)[0]
        seen.append(line)
        if line.startswith("GET /token"):
            conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 40\r\nContent-Length: 0\r\n\r\n")
            return
        challenge = f'Bearer realm="{url}/token",service="fake",scope="repository:library/alpine:pull"'
        conn.sendall(
            f"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    async def pull(upstream: Upstream) -> UpstreamThrottled:
        with pytest.raises(UpstreamThrottled) as raised:
            await upstream.manifest("library/alpine", "3", 4096)
        return raised.value

    async def run() -> tuple[UpstreamThrottled, UpstreamThrottled]:
        async with aiohttp.ClientSession() as session:
            upstream = Upstream(UpstreamSettings("", url, None, None, 0.0), session)
            return await pull(upstream), await pull(upstream)

    with raw_server(answer) as url:
        first, second = asyncio.run(run())
    assert seen == [
        "GET /v2/library/alpine/manifests/3 HTTP/1.1",
        "GET /token?scope=repository:library/alpine:pull&service=fake HTTP/1.1",
    ]
    assert first.until == second.until
    error = second.client_error()
    assert (error.status, error.error.code) == (429, "TOOMANYREQUESTS")
    assert 38 <= int(error.headers["Retry-After"]) <= 40
    assert error.message == f"{url} is limiting our requests: too many requests"
