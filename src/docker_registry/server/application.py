"""The composition root: the one-time preparation before workers start, and the aiohttp application each worker
serves, assembled from the HTTP layer, the APIs and the features over the registry logic and its stores.

Nothing below imports this module; features (auth, GC, proxy, metrics, ...) are wired in here and nowhere else.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from docker_registry.core.driver import Base, fetch
from docker_registry.core.exceptions import ConfigError

from .auth.middleware import Auth
from .auth.middleware import middleware as auth_middleware
from .config import Config
from .gc.background import Maintenance
from .http import body, v2
from .http.context import CONFIG_KEY, GUARD_KEY, REGISTRY_KEY
from .http.errors import errors_middleware
from .registry.cache import RegistryCache
from .registry.service import Registry
from .store import migrate
from .store.collection import CollectionQueries
from .store.engine import ChangeWatcher, create_engine, database_url, sqlite_file
from .store.facade import AsyncMetadataStore
from .store.metadata import MetadataStore
from .store.reserve import reserve_for
from .store.writegate import gate_for

log = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
SERVER_HEADER = "docker-registry"
"""No version: telling every client which releases to look up vulnerabilities for helps only attackers."""
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
    database_file = sqlite_file(url)
    if database_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(database_file)), exist_ok=True)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    reserve = reserve_for(url)
    if reserve is not None:
        reserve.ensure()


def create_app(config: Config) -> web.Application:
    """The application for one worker; stores open in on_startup and close in on_cleanup."""
    body.reuse_buffer_memory()
    middlewares: list[Middleware] = [errors_middleware]
    auth = Auth(config) if config.auth is not None else None
    if auth is not None:  # after the error middleware, so its refusals render as the spec's JSON errors
        middlewares.append(auth_middleware(auth))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"max_field_size": 16384, "read_bufsize": body.READ_BUFFER_SIZE},
    )
    app[CONFIG_KEY] = config
    if auth is not None:
        app[GUARD_KEY] = auth.guard  # also run before `100 Continue` is sent
    configured = {name: _as_list(values) for name, values in config.http.headers.items()}

    async def on_prepare(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        response.headers[hdrs.SERVER] = SERVER_HEADER  # replaces aiohttp's, which names its and Python's versions
        for name, values in configured.items():  # a configured header replaces the default of the same name
            response.headers.popall(name, None)
            for value in values:
                response.headers.add(name, value)

    app.on_response_prepare.append(on_prepare)
    app.cleanup_ctx.append(_stores(config))
    v2.add_routes(app)
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
        database = config.database
        engine = create_engine(url, database.locktimeout, pool_size=database.readthreads + 2)
        gate, reserve = gate_for(url), reserve_for(url)
        store = AsyncMetadataStore(MetadataStore(engine, database.locktimeout, gate, reserve), database.readthreads)
        watcher = ChangeWatcher(url)
        driver = build_driver(config)
        app[REGISTRY_KEY] = Registry(store, driver, RegistryCache(watcher))
        maintenance = Maintenance(config, CollectionQueries(engine, database.locktimeout, gate, reserve), driver)
        maintenance.start()
        try:
            yield
        finally:
            await maintenance.stop()
            await driver.close()
            watcher.close()
            store.close()

    return stores
