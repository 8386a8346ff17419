"""A HEAD answered with an error gets the status and headers its GET would, and no body (none is encoded for it)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from docker_registry.server.http.errors import errors_middleware
from docker_registry.server.registry.errors import BLOB_UNKNOWN, UNAVAILABLE, RegistryError

ERRORS = [
    RegistryError(BLOB_UNKNOWN, {"digest": "sha256:" + "a" * 64}),
    RegistryError(UNAVAILABLE, message="the registry is unhealthy", headers={"Retry-After": "10"}),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.error.code)
async def test_a_head_error_has_its_gets_status_and_headers_and_no_body(error: RegistryError) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise error

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/v2/x/blobs/{digest}", handler)  # aiohttp routes HEAD to a GET route too
    async with TestClient(TestServer(app)) as client:
        get = await client.get("/v2/x/blobs/d")
        get_body = await get.read()
        head = await client.head("/v2/x/blobs/d")
        head_body = await head.read()

    assert head.status == get.status == error.status
    assert get_body
    assert head_body == b""

    def compared(headers: object) -> dict[str, str]:
        kept = dict(headers)  # type: ignore[call-overload]
        for varying in ("Date", "Content-Length"):
            kept.pop(varying, None)
        return kept

    assert compared(head.headers) == compared(get.headers)
    assert head.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Content-Length" not in head.headers  # as before: a HEAD error never announced the GET's body length
