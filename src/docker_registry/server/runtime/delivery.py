"""The delivery process: one child of the master, beside the workers, whose only job is to send the notification
endpoints their events (`application.delivery_service`), at a lower CPU priority than the workers.

Workers only record events (in the outbox, in the change's own transaction); delivering them (reading the outbox,
building the JSON, POSTing it) costs about as much CPU again per pulled GET. Done in a worker, it took that CPU
from requests whenever the cores were busy. Here, niced by `notifications.delivery.nice`, it gets the CPU requests
leave: under a burst that takes every core events wait in the database, durably, and go out as soon as the burst
eases. The guarantees do not depend on the process: the lease it competes for (as any worker did) keeps one
deliverer per registry, cursors keep each endpoint's order, and a SIGKILL loses nothing (the master starts it again).

The master starts it only when an endpoint is enabled and more than one worker serves; one worker serving in the
master's own process delivers there too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from ..application import delivery_service
from ..config import Config
from .worker import enter_child, watch_parent

log = logging.getLogger("docker_registry.server")


def delivery_main(config: Config, inherited: tuple[socket.socket, ...]) -> None:
    """Entry point of the delivery process; `inherited` are the master's own sockets, closed in a forked child.
    Signals as in `worker.worker_main`: SIGTERM ends it (giving up the lease), SIGINT and SIGHUP are not for it."""
    enter_child(config, inherited)
    niceness = os.nice(config.notifications.delivery.nice)  # lower than the workers' by that much
    parent_pid = os.getppid()
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(_deliver(config, parent_pid, niceness))


async def _deliver(config: Config, parent_pid: int, niceness: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with delivery_service(config):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        log.info("notification delivery process ready (pid %d, nice %d)", os.getpid(), niceness)
        watcher = asyncio.create_task(watch_parent(parent_pid, stop))
        await stop.wait()
        watcher.cancel()
    log.info("notification delivery process (pid %d) stopped", os.getpid())
