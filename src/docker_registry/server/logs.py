"""Logging for the master and the workers: one stderr stream, levels named as in Distribution's `log.level`."""

from __future__ import annotations

import logging
import sys

from .config import LogConfig

LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}

ACCESS_LOG_FORMAT = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i" %Tfs'
"""Apache Combined Log Format plus the request time in seconds, so slow requests stand out in the access log."""

ACCESS_LOGGER = logging.getLogger("aiohttp.access")


def setup(config: LogConfig) -> None:
    """Configure the root logger; called in the master and again in every spawned worker (fresh interpreters)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[config.level])
    # Like Distribution's, the access log is its own switch (log.accesslog.disabled), whatever log.level says.
    ACCESS_LOGGER.setLevel(logging.INFO)
