"""The aiohttp application: what the CLI starts in every worker process, and the one-time preparation before."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import HttpVersion10, web
from sqlalchemy import exc as db_errors

from docker_registry.core.driver import Base, fetch
from docker_registry.core.exceptions import ConfigError

from . import body
from .cache import RegistryCache
from .config import Config
from .errors import NOT_FOUND, SIZE_INVALID, UNAVAILABLE, UNKNOWN, UNSUPPORTED, RegistryError
from .registry import Registry
from .routes_v2 import CONFIG_KEY, REGISTRY_KEY, add_routes
from .store import migrate
from .store.engine import ChangeWatcher, create_engine, database_url
from .store.metadata import MetadataStore

log = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
DATABASE_RETRY_AFTER_SECONDS = 5
CLIENT_MAX_SIZE = 16 * 1024 * 1024
"""Only for bodies aiohttp itself buffers (none of ours): uploads and manifests are read as streams."""


def _data_dir(config: Config) -> str | None:
    if config.storage.driver not in ("filesystem", "file"):
        return None
    return str(config.storage.options.get("rootdirectory") or "./data")


def prepare(config: Config) -> None:
    """Run once in the master process before workers fork: data directory and database migrations."""
    if config.storage.driver == "inmemory" and not config.database.url:
        # Blobs in memory vanish with the process; metadata kept on disk would then name blobs that are gone.
        # The inmemory driver always runs one worker in this process, so a private temporary database serves it.
        scratch = tempfile.mkdtemp(prefix="docker-registry-inmemory-")
        atexit.register(shutil.rmtree, scratch, True)
        config.database.url = f"sqlite:///{scratch}/registry.db"
    data_dir = _data_dir(config)
    if data_dir is not None:
        os.makedirs(data_dir, exist_ok=True)
    url = database_url(config)
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url.removeprefix("sqlite:///"))), exist_ok=True)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def _error_response(error: RegistryError, method: str) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers)
    if method == "HEAD":
        response.body = None
    return response


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Render registry errors from the catalogue, and anything unexpected as a clean JSON error, never a trace."""
    try:
        if request.version < HttpVersion10:
            # An HTTP/0.9 request line: aiohttp's C parser takes it and would answer "HTTP/0.9 200"; no public API
            # sets the version of the answer, so the parsed message is rewritten to refuse it in HTTP/1.0.
            request._message = request._message._replace(version=HttpVersion10)
            raise RegistryError(UNSUPPORTED, "HTTP/0.9 is not supported", status=400)
        return await handler(request)
    except RegistryError as e:
        return _error_response(e, request.method)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: NOT_FOUND, 405: UNSUPPORTED, 413: SIZE_INVALID}.get(e.status, UNKNOWN)
        return _error_response(RegistryError(code, e.reason, status=e.status), request.method)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if _database_unavailable(e):
            log.error("database unavailable on %s %s: %s", request.method, request.path, e)
            retry = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
            return _error_response(
                RegistryError(UNAVAILABLE, "metadata database unavailable", headers=retry), request.method
            )
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(RegistryError(UNKNOWN), request.method)


def _database_unavailable(e: Exception) -> bool:
    """Failures a retry may cure: SQLite locked beyond the retries, PostgreSQL unreachable or its connection lost."""
    if isinstance(e, db_errors.OperationalError | db_errors.TimeoutError):
        return True
    return isinstance(e, db_errors.DBAPIError) and e.connection_invalidated


def create_app(config: Config) -> web.Application:
    """The application for one worker; stores open in on_startup and close in on_cleanup."""
    body.reuse_buffer_memory()
    app = web.Application(
        middlewares=[_errors],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"max_field_size": 16384, "read_bufsize": body.READ_BUFFER_SIZE},
    )
    app[CONFIG_KEY] = config
    extra_headers = [(k, v) for k, values in config.http.headers.items() for v in _as_list(values)]

    async def on_prepare(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        for key, value in extra_headers:
            response.headers.add(key, value)

    app.on_response_prepare.append(on_prepare)
    app.cleanup_ctx.append(_stores(config))
    add_routes(app)
    return app


def build_driver(config: Config) -> Base:
    """The configured storage driver; a bad option is a ConfigError naming its key, `storage.<driver>.<option>`."""
    name = config.storage.driver
    try:
        return fetch(name)(config.storage.options)
    except ConfigError as exc:
        raise ConfigError(_storage_key_message(name, config.storage.options, str(exc))) from None


def _storage_key_message(name: str, options: Mapping[str, Any], message: str) -> str:
    """Drivers only know their own options: put the section in front, and the option when the message opens
    with one (`redirect_base must be ...` -> `storage.example.redirect_base: redirect_base must be ...`)."""
    if message.startswith(f"storage.{name}"):
        return message
    for key in options:
        if message.startswith(f"{key}:"):
            return f"storage.{name}.{message}"
        if message.startswith(f"{key} "):
            return f"storage.{name}.{key}: {message}"
    return f"storage.{name}: {message}"


def _as_list(values: object) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list | tuple) else [str(values)]


def _stores(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def stores(app: web.Application) -> AsyncIterator[None]:
        url = database_url(config)
        store = MetadataStore(create_engine(url))
        watcher = ChangeWatcher(url)
        driver = build_driver(config)
        app[REGISTRY_KEY] = Registry(store, driver, RegistryCache(watcher))
        try:
            yield
        finally:
            await driver.close()
            watcher.close()
            store.close()

    return stores
