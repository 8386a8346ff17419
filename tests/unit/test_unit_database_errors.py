"""A database that is locked or unreachable is 503 UNAVAILABLE with Retry-After, not 500: clients retry."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import exc as db_errors

from docker_registry.server.http.errors import errors_middleware


def _failing(error: Exception) -> web.Application:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise error

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/v2/x/tags/list", handler)
    return app


@pytest.mark.parametrize(
    "error",
    [
        db_errors.OperationalError("SELECT 1", {}, Exception("database is locked")),
        db_errors.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True),
        db_errors.TimeoutError("QueuePool limit reached"),
    ],
)
async def test_unavailable_database_is_503_with_retry_after(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    async with TestClient(TestServer(_failing(error))) as client:
        with caplog.at_level(logging.ERROR):
            response = await client.get("/v2/x/tags/list")
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        body = await response.json()
        assert body["errors"][0]["code"] == "UNAVAILABLE"
    records = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is None


async def test_other_database_errors_stay_500() -> None:
    error = db_errors.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    async with TestClient(TestServer(_failing(error))) as client:
        response = await client.get("/v2/x/tags/list")
        assert response.status == 500
        assert (await response.json())["errors"][0]["code"] == "UNKNOWN"
