"""The request id is given by the errors middleware every request takes, before anything reads it: a handler and
the notifications' recorder find it already there (no `KeyError` raised and caught on every request), it is the
one the response's `X-Request-Id` carries, a sane incoming id is kept, and a request no middleware saw still gets
one on first asking."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from docker_registry.server.http import requestid
from docker_registry.server.http.errors import errors_middleware

found: list[str | None] = []


async def _handler(request: web.Request) -> web.StreamResponse:
    found.append(request.get(requestid.KEY))  # what a handler finds before anything asked for the id
    return web.Response(text="ok")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[requestid.HEADER] = requestid.request_id(request)


async def test_the_middleware_gives_the_id_before_the_handler_and_the_header_carries_it() -> None:
    found.clear()
    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/v2/", _handler)
    app.on_response_prepare.append(_on_prepare)
    async with TestClient(TestServer(app)) as client:
        made = await client.get("/v2/")
        kept = await client.get("/v2/", headers={requestid.HEADER: "trace-7.b"})
        refused = await client.get("/v2/", headers={requestid.HEADER: 'bad "id'})
    assert found[0] is not None
    assert made.headers[requestid.HEADER] == found[0]
    assert found[1] == kept.headers[requestid.HEADER] == "trace-7.b"
    assert found[2] == refused.headers[requestid.HEADER] != 'bad "id'
    assert len(set(found)) == 3


def test_a_request_no_middleware_saw_gets_its_id_on_first_asking_and_keeps_it() -> None:
    request = make_mocked_request("GET", "/v2/", headers={requestid.HEADER: "from-proxy"})
    assert requestid.request_id(request) == "from-proxy" == requestid.request_id(request)
    other = make_mocked_request("GET", "/v2/")
    made = requestid.request_id(other)
    assert made != "from-proxy"
    assert requestid.request_id(other) == made
