"""Errors as clients read them: registry errors rendered from the catalogue, anything unexpected as a clean JSON
error (never a traceback), and a database that cannot answer now as 503 with `Retry-After`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion10, web
from sqlalchemy import exc as db_errors

from ..registry.errors import NOT_FOUND, SIZE_INVALID, UNAVAILABLE, UNKNOWN, UNSUPPORTED, RegistryError

log = logging.getLogger("docker_registry.server.http")

DATABASE_RETRY_AFTER_SECONDS = 5


def error_response(error: RegistryError, method: str) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers)
    if method == "HEAD":
        response.body = None
    return response


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        if request.version < HttpVersion10:
            return _refuse_http09(request)
        return await handler(request)
    except RegistryError as e:
        return error_response(e, request.method)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: NOT_FOUND, 405: UNSUPPORTED, 413: SIZE_INVALID}.get(e.status, UNKNOWN)
        return error_response(RegistryError(code, e.reason, status=e.status), request.method)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if database_unavailable(e):
            log.error("database unavailable on %s %s: %s", request.method, request.path, e)
            retry = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
            return error_response(
                RegistryError(UNAVAILABLE, "metadata database unavailable", headers=retry), request.method
            )
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(RegistryError(UNKNOWN), request.method)


def _refuse_http09(request: web.Request) -> web.Response:
    """An HTTP/0.9 request line (no version): aiohttp's C parser accepts it, and would answer in HTTP/0.9, whose
    responses have no status line. The refusal is written straight to the connection in HTTP/1.0, which then
    closes; aiohttp finds the connection closed and writes nothing more."""
    body = json.dumps(RegistryError(UNSUPPORTED, "HTTP/0.9 is not supported", status=400).body()).encode()
    head = (
        "HTTP/1.0 400 Bad Request\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.write(head.encode() + body)
        transport.close()
    return web.Response(status=400)


def database_unavailable(e: Exception) -> bool:
    """Failures a retry may cure: SQLite locked beyond the retries, PostgreSQL unreachable or its connection lost."""
    if isinstance(e, db_errors.OperationalError | db_errors.TimeoutError):
        return True
    return isinstance(e, db_errors.DBAPIError) and e.connection_invalidated
