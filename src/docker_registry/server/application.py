"""The composition root: the aiohttp application each worker serves, assembled from the HTTP layer, the APIs and
the features over the registry logic and its stores (the one-time preparation before workers start is
`preparation`).

Nothing below imports this module; features (auth, GC, proxy, metrics, ...) are wired in here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import sqlalchemy as sa
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from docker_registry.core.driver import Base
from docker_registry.core.exceptions import ConfigError

from . import ui, v1
from .auth.logins import Blocked, Logins
from .auth.middleware import Auth, Authenticator
from .auth.middleware import middleware as auth_middleware
from .auth.service import TokenService
from .auth.setup import create as create_auth
from .config import CheckSection, Config
from .gc.background import Maintenance
from .health import endpoints as health_endpoints
from .health import probes
from .health.monitor import Check, HealthMonitor, Probe
from .http import body, requestid, v2
from .http.context import ANSWERED, CONFIG_KEY, GUARD_KEY, OBSERVERS_KEY, REGISTRY_KEY
from .http.errors import errors_middleware
from .metrics import multiprocess
from .metrics.caches import CacheMetrics
from .metrics.database import instrument_engine
from .metrics.driver import InstrumentedDriver
from .metrics.exposition import metrics_handler
from .metrics.flushing import Flushed, FlushedTogether
from .metrics.instruments import Instruments
from .metrics.inventory import InventoryCollector
from .metrics.queues import QueueMetrics
from .metrics.requests import RequestMetrics
from .notifications import setup as notifications
from .preparation import build_driver
from .proxy import middleware as proxy_middleware
from .proxy import setup as proxy_setup
from .registry.cache import BoundedCache, RegistryCache
from .registry.service import Registry
from .store import migrate
from .store.collection import CollectionQueries
from .store.engine import ChangeWatcher, Watcher, create_engine, database_url, sqlite_file
from .store.facade import AsyncMetadataStore
from .store.inline import InlineReads
from .store.metadata import MetadataStore
from .store.notify import PostgresChangeWatcher
from .store.reserve import reserve_for
from .store.writegate import gate_for

log = logging.getLogger(__name__)

MONITOR_KEY: web.AppKey[HealthMonitor] = web.AppKey("health", HealthMonitor)
INSTRUMENTS_KEY: web.AppKey[Instruments] = web.AppKey("instruments", Instruments)
INVENTORY_KEY: web.AppKey[InventoryCollector] = web.AppKey("inventory", InventoryCollector)
REQUESTS_KEY: web.AppKey[RequestMetrics] = web.AppKey("request_metrics", RequestMetrics)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
SERVER_HEADER = "docker-registry"
"""No version: telling every client which releases to look up vulnerabilities for helps only attackers."""
CLIENT_MAX_SIZE = 16 * 1024 * 1024
"""Only for bodies aiohttp itself buffers (none of ours): uploads and manifests are read as streams."""
MAX_FIELD_SIZE = 32 * 1024
"""Longest header line taken: a zstd:chunked pull asks for up to 1,024 byte ranges of a layer in one `Range` (some
20-23 KB with a large layer's offsets)."""
MAX_HEADERS = 64
"""Header lines taken: clients send about ten, proxies and tracing add a dozen more. With `MAX_FIELD_SIZE`, a
request's headers hold at most 2 MiB, the bound they had with aiohttp's defaults here (128 lines of 16 KiB)."""


def create_app(config: Config) -> web.Application:
    """The application for one worker; stores open in on_startup and close in on_cleanup. With notifications, the
    worker records events; it delivers them too only when it is the registry's one process (else the delivery
    process does, see `delivery_service`)."""
    delivers = not notifications.in_own_process(config)
    body.reuse_buffer_memory()
    monitor = HealthMonitor()
    # Health first after errors: probes need no credentials, and `health.unavailable` refuses before anything.
    middlewares: list[Middleware] = [errors_middleware, health_endpoints.middleware(monitor, config.health.unavailable)]
    auth, token_service = create_auth(config) if config.auth is not None else (None, None)
    if config.proxy is not None and auth is not None:  # before auth: which repository a `?ns=` pull is served from
        middlewares.append(proxy_middleware.naming_middleware())
    if auth is not None:  # after the error middleware, so its refusals render as the spec's JSON errors
        ui_prefix = ui.PREFIX if config.ui.enabled else None  # the UI logs its users in itself (same users, rules)
        middlewares.append(auth_middleware(auth, token_service.path if token_service else None, ui_prefix))
    if config.proxy is not None:  # after auth: a pull through the cache needs the right to pull
        middlewares.append(proxy_middleware.middleware())
    app = web.Application(
        middlewares=middlewares,
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADERS,
            "read_bufsize": body.READ_BUFFER_SIZE,
        },
    )
    app[CONFIG_KEY] = config
    app[MONITOR_KEY] = monitor
    app[OBSERVERS_KEY] = []
    if config.http.debug.prometheus.enabled:
        instruments = app[INSTRUMENTS_KEY] = Instruments()
        requests = app[REQUESTS_KEY] = RequestMetrics(instruments)
        app[OBSERVERS_KEY].append(requests.observe)  # a bound method: Python calls it inline, unlike `__call__`
    if auth is not None:
        app[GUARD_KEY] = auth.guard  # also run before `100 Continue` is sent
    configured = {name: _as_list(values) for name, values in config.http.headers.items()}

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        request[ANSWERED] = response.status
        response.headers[requestid.HEADER] = requestid.request_id(request)
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        response.headers[hdrs.SERVER] = SERVER_HEADER  # replaces aiohttp's, which names its and Python's versions
        for name, values in configured.items():  # a configured header replaces the default of the same name
            response.headers.popall(name, None)
            for value in values:
                response.headers.add(name, value)

    app.on_response_prepare.append(on_prepare)
    app.cleanup_ctx.append(_stores(config, delivers))
    if notifications.enabled(config):
        app.cleanup_ctx.append(notifications.lifecycle(config, delivers))
    if config.proxy is not None:
        stale = None
        if INSTRUMENTS_KEY in app:
            counter = app[INSTRUMENTS_KEY].proxy_stale

            def stale(served: str) -> None:
                counter.labels(served).inc()

        app.cleanup_ctx.append(proxy_setup.running(config, stale))
    v2.add_routes(app)
    if token_service is not None:
        app.router.add_route("*", token_service.path, token_service.handle)
    if config.v1.enabled and not _v1_locked_out(config):
        v1.add_routes(app)
    if config.ui.enabled:
        ui.add_routes(app, config, _ui_accounts(auth, token_service), monitor.passing)
    return app


def _v1_locked_out(config: Config) -> bool:
    """Token authentication leaves v1 off: docker 1.x engines cannot get bearer tokens, and the v1 routes would only
    answer 401 or 404. Said once per worker when v1 was asked for by name."""
    if config.auth is None or config.auth.token is None:
        return False
    if "enabled" in config.v1.model_fields_set:
        log.warning("v1.enabled is ignored with auth.token: docker 1.x engines cannot use bearer tokens")
    return True


def _ui_accounts(auth: Authenticator | None, token_service: TokenService | None) -> ui.Accounts | None:
    """The users and rules the UI logs in with: htpasswd mode's, or the built-in token service's when it checks
    an htpasswd file. None otherwise (no auth, or an outside token server the UI cannot use)."""
    if isinstance(auth, Auth):
        rules = auth.rules
        return ui.Accounts(_ui_check(auth.logins), auth.htpasswd.entry, rules.allows, rules.allows_somewhere)
    if token_service is not None and token_service.htpasswd is not None:
        rules = token_service.rules
        entry = token_service.htpasswd.entry
        return ui.Accounts(_ui_check(token_service.logins), entry, rules.allows, rules.allows_somewhere)
    return None


def _ui_check(logins: Logins) -> Callable[[str, str, str], Awaitable[bool]]:
    """The API's password check for the UI, which may not import the auth feature: its refusal in the UI's terms."""

    async def check(address: str, user: str, password: str) -> bool:
        try:
            return await logins.check(address, user, password)
        except Blocked as blocked:
            raise ui.LoginsBlocked(blocked.seconds) from None

    return check


def create_debug_app(config: Config, main: web.Application) -> web.Application:
    """The debug listener's application (`http.debug.addr`): `/debug/health` and, when enabled, the metrics of
    every worker. Served by one worker; it reads the main application's health monitor and inventory."""
    app = web.Application()
    app.router.add_get("/debug/health", health_endpoints.debug_health(main[MONITOR_KEY]))
    prometheus = config.http.debug.prometheus
    if prometheus.enabled:
        directory = multiprocess.current()
        if directory is None:
            raise ConfigError("http.debug.prometheus: the metrics directory of this run is missing")

        def health_states() -> Mapping[str, bool]:
            return main[MONITOR_KEY].passing()

        def inventory() -> InventoryCollector | None:  # the main app's stores open after this app is built
            return main.get(INVENTORY_KEY)

        app.router.add_get(prometheus.path, metrics_handler(directory, inventory, health_states))
    return app


def _as_list(values: object) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list | tuple) else [str(values)]


@contextlib.asynccontextmanager
async def open_registry(config: Config, instruments: Instruments | None = None) -> AsyncIterator[Registry]:
    """The registry logic over the configured database and storage driver, closed on leaving: what a worker
    serves (its database and driver timed by `instruments` when metrics are on), and what maintenance commands
    (`import`) work on."""
    url = database_url(config)
    database = config.database
    engine = create_engine(url, database.locktimeout, pool_size=database.readthreads + 2)
    inline = InlineReads(url) if sqlite_file(url) else None
    if instruments is not None:
        instrument_engine(engine, instruments)
        if inline is not None:
            instrument_engine(inline.engine, instruments)
    store = AsyncMetadataStore(
        MetadataStore(engine, database.locktimeout, gate_for(url), reserve_for(url)), database.readthreads, inline
    )
    driver = build_driver(config)
    if instruments is not None:
        driver = InstrumentedDriver(driver, config.storage.driver, instruments)
    async with _change_watcher(url) as watcher:
        try:
            yield Registry(store, driver, RegistryCache(watcher))
        finally:
            await driver.close()
            store.close()


@contextlib.asynccontextmanager
async def _change_watcher(url: str) -> AsyncIterator[Watcher]:
    """What tells this worker's caches that any node committed: PostgreSQL's notifications, else SQLite's."""
    if sa.make_url(url).get_backend_name() == "postgresql":
        listener = PostgresChangeWatcher(url)
        await listener.start()
        try:
            yield listener
        finally:
            await listener.aclose()
        return
    watcher = ChangeWatcher(url)
    try:
        yield watcher
    finally:
        watcher.close()


def _stores(config: Config, delivers: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def stores(app: web.Application) -> AsyncIterator[None]:
        instruments = app.get(INSTRUMENTS_KEY)
        async with open_registry(config, instruments) as logic:
            app[REGISTRY_KEY] = logic
            _add_checks(app[MONITOR_KEY], config, logic.driver, logic.store)
            async with contextlib.AsyncExitStack() as running:
                await running.enter_async_context(app[MONITOR_KEY].running())
                sync = logic.store.sync  # garbage collection and upload purging, on the worker's engine
                collection = CollectionQueries(sync.engine, sync.lock_timeout, sync.gate, sync.reserve)
                maintenance = Maintenance(config, collection, logic.driver)
                maintenance.start()
                running.push_async_callback(maintenance.stop)
                if instruments is not None:
                    app[INVENTORY_KEY] = InventoryCollector(logic.store, config.storage)
                    cache = logic.cache
                    caches: dict[str, BoundedCache[Any, Any]] = {
                        "tags": cache.tags,
                        "manifests": cache.manifests,
                        "blobs": cache.blobs,
                    }
                    # one task, timings first: counts of requests seen in a scrape come with their timings
                    tallies: list[Flushed] = [instruments.storage_timings, instruments.query_timings]
                    tallies += [CacheMetrics(caches, instruments), app[REQUESTS_KEY]]
                    if delivers and notifications.enabled(config):
                        tallies.append(QueueMetrics(lambda: app.get(notifications.STATS_KEY), instruments))
                    await running.enter_async_context(FlushedTogether(tallies).flushing())
                yield

    return stores


@contextlib.asynccontextmanager
async def delivery_service(config: Config) -> AsyncIterator[None]:
    """What the delivery process runs (`runtime.delivery`) while the block lasts: the notifications' deliverer over
    a database engine of its own; with metrics on, its queue counters and its statements' timings are flushed to
    the run's shared metrics once a second, so one scrape of the debug listener (served by a worker) shows them."""
    url = database_url(config)
    database = config.database
    # the lease, the cursors and each endpoint's reads run in threads of their own: a connection each
    engine = create_engine(url, database.locktimeout, pool_size=len(config.notifications.enabled) + 2)
    instruments = Instruments() if config.http.debug.prometheus.enabled else None
    if instruments is not None:
        instrument_engine(engine, instruments)
    store = MetadataStore(engine, database.locktimeout, gate_for(url), reserve_for(url))
    try:
        async with notifications.delivering(config, store) as stats:
            if instruments is None:
                yield
                return
            tallies = FlushedTogether([instruments.query_timings, QueueMetrics(lambda: stats, instruments)])
            tallies.flush()  # the endpoints' series show at zero from the start
            async with tallies.flushing():
                yield
    finally:
        store.close()


def _add_checks(monitor: HealthMonitor, config: Config, driver: Base, store: AsyncMetadataStore) -> None:
    """The checks `health` enables: storage (writable; free space above `storage.minfree`), the database, and the
    files, URLs and addresses listed under `health.file`, `health.http` and `health.tcp`."""

    def add(name: str, probe: Probe, section: CheckSection) -> None:
        monitor.add(Check(name, probe, section.interval, section.threshold))

    storage = config.health.storagedriver
    if storage.enabled:
        probe = probes.storage_readable(driver) if config.storage.readonly else probes.storage_writable(driver)
        add(f"storagedriver_{config.storage.driver}", probe, storage)
        if config.storage.minfree is not None and config.storage.driver == "filesystem":
            add("diskspace", probes.free_space(config.storage), storage)
    if config.health.database.enabled:
        writes = not config.storage.readonly
        add("database", probes.database(store, migrate.head(), writes), config.health.database)
    # Distribution's listed checks, named as it names them (an HTTP check's URL without credentials or query)
    for listed in config.health.file:
        monitor.add(Check(listed.file, probes.file_absent(listed.file), listed.interval, max(1, listed.threshold)))
    for http in config.health.http:
        probe = probes.http_answers(http.uri, http.headers, http.statuscode, http.timeout)
        monitor.add(Check(probes.check_name(http.uri), probe, http.interval, max(1, http.threshold)))
    for tcp in config.health.tcp:
        probe = probes.tcp_accepts(tcp.addr, tcp.timeout)
        monitor.add(Check(tcp.addr, probe, tcp.interval, max(1, tcp.threshold)))
