"""Errors as clients read them: registry errors rendered from the catalogue, anything unexpected as a clean JSON
error (never a traceback), and a database that cannot answer now as 503 with `Retry-After`."""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion10, web
from sqlalchemy import exc as db_errors

from docker_registry.core.exceptions import ConnectionError as StorageUnavailable

from ..registry.errors import (
    NOT_FOUND,
    OUT_OF_SPACE,
    SIZE_INVALID,
    UNAVAILABLE,
    UNKNOWN,
    UNSUPPORTED,
    RegistryError,
)
from .context import ANSWERED, SERVING
from .requestid import assign as assign_request_id

log = logging.getLogger("docker_registry.server.http")

DATABASE_RETRY_AFTER_SECONDS = 5
OUT_OF_SPACE_LOG_INTERVAL = 60.0
_out_of_space_logged = [0.0]


def error_response(error: RegistryError, method: str) -> web.Response:
    """The error as JSON; for a HEAD the same status and headers without encoding a body that is never sent (a
    client checks each layer with HEADs that mostly answer 404: the JSON was most of such an answer's cost)."""
    if method == "HEAD":
        return web.Response(
            status=error.status, headers=error.headers, content_type="application/json", charset="utf-8"
        )
    return web.json_response(error.body(), status=error.status, headers=error.headers)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Renders what the request's handling raised; also gives the request its id (`requestid.assign`) and makes it
    known as `SERVING` meanwhile: one step every request takes anyway."""
    assign_request_id(request)
    serving = SERVING.set(request)
    try:
        if request.version < HttpVersion10:
            return _refuse_http09(request)
        return await handler(request)
    except Exception as e:
        if request.writer.output_size > 0:
            return _cut(request, e)
        return _answer(request, e)
    finally:
        SERVING.reset(serving)


def _answer(request: web.Request, e: Exception) -> web.Response:
    """The error answer to what the handler raised (a redirect, raised as an HTTPException, goes on)."""
    if isinstance(e, RegistryError):
        return error_response(e, request.method)
    if isinstance(e, web.HTTPException):
        if e.status < 400:
            raise e
        code = {404: NOT_FOUND, 405: UNSUPPORTED, 413: SIZE_INVALID}.get(e.status, UNKNOWN)
        return error_response(RegistryError(code, e.reason, status=e.status), request.method)
    if out_of_space(e):
        _log_out_of_space(request, e)
        return error_response(RegistryError(OUT_OF_SPACE), request.method)
    if database_unavailable(e):
        log.error("database unavailable on %s %s: %s", request.method, request.path, e)
        retry = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        return error_response(
            RegistryError(UNAVAILABLE, "metadata database unavailable", headers=retry), request.method
        )
    if isinstance(e, StorageUnavailable) or storage_not_writable(e):
        log.error("storage unavailable on %s %s: %s", request.method, request.path, e)
        retry = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        return error_response(RegistryError(UNAVAILABLE, "storage unavailable", headers=retry), request.method)
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(RegistryError(UNKNOWN), request.method)


def _cut(request: web.Request, e: Exception) -> web.Response:
    """An error once the answer's first bytes are out (a storage read failing mid-blob, the client gone): no error
    answer can follow, since aiohttp would write it into the same stream, where the client reads it as the rest of
    the body; the connection is closed instead, and the client sees a body shorter than its `Content-Length`. The
    answer returned only names the request's fate in the access log: aiohttp cannot write it to a closing
    connection."""
    if isinstance(e, RegistryError):
        status = e.status
    elif isinstance(e, ConnectionError):  # a client that went away is no server error: what it was being sent
        status = request.get(ANSWERED, 500)
    else:
        log.error("%s %s cut short: %s", request.method, request.path, e, exc_info=e)
        status = 500
    transport = request.transport
    if transport is not None:
        transport.close()
    return _Cut(status, request.writer.output_size)


class _Cut(web.Response):
    """What the access log and metrics see of a cut answer: its status, and the bytes that did go out (the answer
    itself is never written: its connection is closing)."""

    def __init__(self, status: int, sent: int) -> None:
        super().__init__(status=status)
        self._sent = sent

    @property
    def body_length(self) -> int:
        return self._sent


def http09_refusal() -> bytes:
    """The whole answer to an HTTP/0.9 request line (no version), which aiohttp's C parser accepts and would answer
    in HTTP/0.9, whose responses have no status line: a 400 in HTTP/1.0, which every client can read, with the
    usual JSON error body. The connection closes after it."""
    body = json.dumps(RegistryError(UNSUPPORTED, "HTTP/0.9 is not supported", status=400).body()).encode()
    head = (
        "HTTP/1.0 400 Bad Request\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _refuse_http09(request: web.Request) -> web.Response:
    """Written straight to the connection, which then closes; aiohttp finds it closed and writes nothing more. (A
    connection's first request line is refused on arrival, in `runtime.connections`; this one came later, or in
    pieces, and aiohttp parsed it once a blank line followed.)"""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.write(http09_refusal())
        transport.close()
    return web.Response(status=400)


def out_of_space(e: Exception) -> bool:
    """A full disk (or quota), met by a blob write or by the database."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, db_errors.OperationalError) and "database or disk is full" in str(e)


def storage_not_writable(e: Exception) -> bool:
    """Storage the operator made read-only (a remount after an error, a snapshot) or unreadable, or a disk failing:
    the registry's files are fine, the machine is not, and a retry may find it repaired."""
    return isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def _log_out_of_space(request: web.Request, e: Exception) -> None:
    """Once a minute per worker: on a full disk every write fails the same way."""
    now = time.monotonic()
    if now - _out_of_space_logged[0] >= OUT_OF_SPACE_LOG_INTERVAL:
        _out_of_space_logged[0] = now
        log.error("out of storage space on %s %s (logged once a minute): %s", request.method, request.path, e)


def database_unavailable(e: Exception) -> bool:
    """Failures a retry may cure: SQLite locked beyond the retries, PostgreSQL unreachable or its connection lost."""
    if isinstance(e, db_errors.OperationalError | db_errors.TimeoutError):
        return True
    return isinstance(e, db_errors.DBAPIError) and e.connection_invalidated
