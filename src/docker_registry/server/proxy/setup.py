"""The cache assembled for one worker from the `proxy` section: the upstreams' HTTP client session (opened and
closed with the worker), the targets, manifest freshness and the blob fetches."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from ..config import Config
from ..config.proxy import ProxyConfig
from ..http.context import REGISTRY_KEY
from ..registry import process_identity
from .claims import Claims
from .flight import Flights
from .manifests import Manifests
from .middleware import HANDLERS_KEY, ProxyHandlers
from .pulls import PullRecorder
from .targets import StaleObserver, Targets
from .upstream import Upstream, UpstreamSettings
from .warm import warmed

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
"""Seconds without a byte from the upstream before a fetch counts as failed (and the cache serves what it has)."""
READ_BUFFER = 2 * 1024 * 1024
"""Bytes of an upstream answer buffered before reading the socket pauses (aiohttp buffers up to twice that): a blob
arrives in chunks of up to a few MiB, each hashed and written in one step, instead of 64 KiB ones each costing a
thread hop; at most about 4 MiB of memory per blob being fetched."""
SPOOL_PREFIX = "docker-registry-proxy-"


def prepare(proxy: ProxyConfig) -> None:
    """In the master, before workers start: the spool directory they share (see `flight`), a temporary one unless
    configured, removed when the master exits."""
    if proxy.spooldirectory is None:  # and the spools of earlier runs killed with SIGKILL removed
        proxy.spooldirectory = process_identity.owned_directory(SPOOL_PREFIX)
        atexit.register(shutil.rmtree, proxy.spooldirectory, True)
    os.makedirs(proxy.spooldirectory, mode=0o700, exist_ok=True)


def settings(proxy: ProxyConfig) -> list[UpstreamSettings]:
    if proxy.remoteurl is not None:
        return [UpstreamSettings("", proxy.remoteurl, proxy.username, proxy.password, proxy.ttl)]
    return [UpstreamSettings(u.prefix, u.remoteurl, u.username, u.password, u.ttl) for u in proxy.upstreams]


def running(
    config: Config, stale: StaleObserver | None = None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """The cleanup context that opens the client session once the registry logic is open (after `_stores`);
    `stale` is told of every pull served from the cache because the upstream was unavailable (metrics)."""
    proxy = config.proxy
    assert proxy is not None
    assert proxy.spooldirectory is not None, "prepare() first"
    spool = proxy.spooldirectory

    @contextlib.asynccontextmanager
    async def run(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        async with aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, trust_env=True, read_bufsize=READ_BUFFER
        ) as session:
            logic = app[REGISTRY_KEY]
            upstreams = [Upstream(item, session) for item in settings(proxy)]
            targets = Targets(upstreams, mirror=proxy.remoteurl is not None)
            observer = stale or _ignore
            manifests = Manifests(logic, config.validation.manifest_max_bytes, observer, Claims(logic.store))
            pulls = PullRecorder(logic.store)
            app[HANDLERS_KEY] = ProxyHandlers(targets, manifests, Flights(logic, spool), pulls, observer)
            async with pulls.flushing(), warmed(logic, upstreams, session):
                yield

    return run


def _ignore(served: str) -> None:
    return None
