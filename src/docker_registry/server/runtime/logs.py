"""Logging for the master and the workers: one stderr stream, levels named as in Distribution's `log.level`."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import HttpProcessingError

from ..config import LogConfig

LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}

ACCESS_LOG_FORMAT = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i" %Tfs'
"""Apache Combined Log Format plus the request time in seconds, so slow requests stand out in the access log."""

ACCESS_LOGGER = logging.getLogger("aiohttp.access")
SERVER_LOGGER = logging.getLogger("aiohttp.server")


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with a full traceback at ERROR; that is the client's fault, not a
    server bug, so it becomes one INFO line and real errors stay easy to find."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args, record.exc_info = (
                "refused a malformed request: %s",
                (" ".join(str(exc.message).split()),),
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def setup(config: LogConfig) -> None:
    """Configure the root logger; called in the master and again in every spawned worker (fresh interpreters)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[config.level])
    # Like Distribution's, the access log is its own switch (log.accesslog.disabled), whatever log.level says.
    ACCESS_LOGGER.setLevel(logging.INFO)
    SERVER_LOGGER.addFilter(MalformedRequestFilter())
