"""`serve`: the master checks the configuration and prepares once, then serves in-process (one worker) or starts
and supervises the worker processes that share the port."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket

from docker_registry.core import exceptions
from docker_registry.core.driver import fetch
from docker_registry.core.exceptions import ConfigError

from ..auth.setup import check as check_auth
from ..config import Config, hide_password
from ..metrics import multiprocess
from ..preparation import check_storage, prepare
from ..proxy import setup as proxy_setup
from ..store.engine import database_url
from . import logs, tls
from .supervisor import Supervisor
from .worker import WorkerStartupError, run_loop, traceback_worth_showing

log = logging.getLogger("docker_registry.server")


def serve(config: Config) -> int:
    """Run the registry until SIGTERM/SIGINT; returns the process exit status."""
    logs.setup(config.log)
    for notice in config.notices:
        log.warning("%s", notice)
    os.umask(config.storage.umask)  # blobs, directories and the database: not whatever the caller's shell had
    tls.server_context(config.http)  # a bad certificate fails here, once, not in every worker
    _check_driver(config)
    check_auth(config)
    for addr, (host, port) in _addresses(config):
        try:
            _check_address_free(host, port)
        except OSError as exc:
            log.error("cannot listen on %s: %s", addr, exc.strerror or exc)
            return 1
    host, port = config.http.host_port()
    try:
        prepare(config)
        if config.proxy is not None:
            proxy_setup.prepare(config.proxy)  # the spool directory the workers share
    except Exception as exc:
        log.error("cannot prepare the data directory and database: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1
    count = config.http.worker_count
    log.info(
        "docker-registry listening on %s://%s:%d with %d worker%s, storage %s, database %s",
        "https" if config.http.tls_certificate else "http",
        f"[{host}]" if host and ":" in host else host or "*",
        port,
        count,
        "" if count == 1 else "s",
        config.storage.describe(),
        hide_password(database_url(config)),
    )
    metrics = multiprocess.begin_run() if config.http.debug.prometheus.enabled else None
    try:
        if count == 1:
            return _run_in_process(config)
        return Supervisor(config, count).run()
    finally:
        if metrics is not None:
            multiprocess.end_run(metrics)


def _addresses(config: Config) -> list[tuple[str, tuple[str | None, int]]]:
    """The main address, and the debug listener's when there is one."""
    found = [(config.http.addr, config.http.host_port())]
    if config.http.debug.addr is not None:
        found.append((config.http.debug.addr, config.http.debug.host_port()))
    return found


def _check_driver(config: Config) -> None:
    """An unknown storage driver, a bad driver option or an unreachable backend (a missing bucket) is a
    configuration error (exit 2), found here, once, before any worker builds its own driver and dies on it. The
    driver built here is closed at once."""
    try:
        fetch(config.storage.driver)
    except exceptions.NotImplementedError as exc:
        raise ConfigError(f"storage.{config.storage.driver}: {exc}") from None

    asyncio.run(check_storage(config))


def _check_address_free(host: str | None, port: int) -> None:
    """Refuse to start beside another server on the port.

    Workers bind with SO_REUSEPORT, which would silently share the port with any other SO_REUSEPORT listener of
    the same user (say a second registry with other data); a bind without it fails if anything listens there.
    """
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does; TIME_WAIT is fine
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and host is None:
                    continue  # e.g. no IPv6 on this machine: asyncio skips it the same way
                raise


def _run_in_process(config: Config) -> int:
    """One worker: serve in the master itself, no extra process."""
    try:
        run_loop(config, reuse_port=False, stop_signals=(signal.SIGTERM, signal.SIGINT), parent_pid=None)
    except WorkerStartupError as exc:
        log.error("%s", exc, exc_info=traceback_worth_showing(exc))
        return 1
    log.info("stopped")
    return 0
