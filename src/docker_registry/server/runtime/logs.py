"""Logging for the master and the workers: one stderr stream, levels named as in Distribution's `log.level`, lines
formatted as `log.formatter` says (`text`, `json`, `logfmt`), and the access log: one line per request."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, InvalidHeader, InvalidURLError, LineTooLong

from ..config import LogConfig
from ..config.values import SECRET_PARAMETER
from ..http.context import user
from ..http.requestid import request_id

LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}

ACCESS_LOGGER = logging.getLogger("aiohttp.access")
SERVER_LOGGER = logging.getLogger("aiohttp.server")
PLUGINS_LOGGER = logging.getLogger("alembic.runtime.plugins")
FIELDS = "fields"
"""The LogRecord attribute holding a line's structured fields (the access log's), for the json and logfmt
formatters."""
TEXT = "text"
"""The LogRecord attribute holding the line the text formatter shows instead of the message (the access log's
Combined Log Format line)."""

REDACTED = "REDACTED"


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with a full traceback at ERROR; that is the client's fault, not a
    server bug, so it becomes one INFO line and real errors stay easy to find. The line says what was wrong, never
    the bytes at fault: aiohttp's message quotes the offending line, an `Authorization` header with a bare LF after
    it or a request line with a `?access_token=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed request: %s", (_what_was_wrong(exc),)
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _what_was_wrong(exc: HttpProcessingError) -> str:
    """The description of a parse error without the request's bytes: aiohttp's parser writes the description, a
    colon and the offending line quoted below it (its pure-Python parser gives some errors as the bare URL)."""
    text = str(exc.message)
    if "\n" in text:
        text = text.split("\n", 1)[0].rstrip().removesuffix(":")
    elif isinstance(exc, (InvalidURLError, InvalidHeader, LineTooLong)):  # their message is (a part of) the line
        text = type(exc).__name__
    return " ".join(text.split())[:200] or type(exc).__name__


LEVEL_NAMES = {"WARNING": "warn", "CRITICAL": "error"}


def _level(record: logging.LogRecord) -> str:
    return LEVEL_NAMES.get(record.levelname, record.levelname.lower())


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object a line: `time`, `level`, `msg`, `logger`, `pid`, `log.fields`, the line's own fields, and
    `error` with a traceback."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": _level(record),
            "msg": record.getMessage(),
            "logger": record.name,
            "pid": record.process,
            **self.fields,
        }
        line.update(getattr(record, FIELDS, {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


_BARE = re.compile(r"[^\s\"=\\]+")


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs, values quoted when they hold spaces, quotes or `=` (as logrus' text formatter writes)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        pairs: dict[str, object] = {
            "time": _timestamp(record),
            "level": _level(record),
            "msg": record.getMessage(),
            "logger": record.name,
            "pid": record.process,
            **self.fields,
        }
        pairs.update(getattr(record, FIELDS, {}))
        if record.exc_info:
            pairs["error"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items())


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """Readable lines; a record with a text of its own (an access line) shows that instead of its message, and
    `log.fields` follow as `key=value`."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(TEXT_FORMAT)
        self.suffix = "".join(f" {key}={_logfmt_value(value)}" for key, value in fields.items())

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = getattr(record, TEXT, None)
        if text is not None:
            record.message = text
        return super().formatMessage(record) + self.suffix


def formatter(config: LogConfig) -> logging.Formatter:
    fields = dict(config.fields)
    if config.formatter == "json":
        return JSONFormatter(fields)
    if config.formatter == "logfmt":
        return LogfmtFormatter(fields)
    return TextFormatter(fields)


def setup(config: LogConfig) -> None:
    """Configure the root logger; called in the master and again in every spawned worker (fresh interpreters)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(config))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[config.level])
    # Like Distribution's, the access log is its own switch (log.accesslog.disabled), whatever log.level says.
    ACCESS_LOGGER.setLevel(logging.INFO)
    SERVER_LOGGER.addFilter(MalformedRequestFilter())
    # Alembic (1.18+) says "setup plugin alembic.autogenerate.*" at INFO, seven lines in every process that loads it
    # (the master and each spawned worker), at every start: only with log.level debug (and its warnings only where
    # the level lets warnings through)
    level = LEVELS[config.level]
    PLUGINS_LOGGER.setLevel(logging.NOTSET if config.level == "debug" else max(logging.WARNING, level))


def loggable_target(request: web.BaseRequest) -> str:
    """The request's path and query as the log shows them: values of parameters that may carry credentials are
    replaced (the Authorization header is never logged at all)."""
    url = request.rel_url
    query = url.raw_query_string
    if not query:
        return url.raw_path
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [(key, REDACTED if SECRET_PARAMETER.search(key) else value) for key, value in pairs]
    return f"{url.raw_path}?{urlencode(shown, quote_via=quote, safe='/:')}"


def _quoted(text: str) -> str:
    """A header value in the text line: quoted, with quotes, backslashes and control characters escaped, so a
    client cannot forge fields or lines."""
    return json.dumps(text)


def log_request(request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
    """The access log line of one request (Distribution's field names in json and logfmt)."""
    target = loggable_target(request)
    rid = request_id(request)
    agent = request.headers.get("User-Agent", "")
    remote = request.remote or "-"
    received = request.content.total_bytes  # what was read of the body (a refused upload's is not)
    who = user(request) if isinstance(request, web.Request) else None
    fields = {
        "http.request.id": rid,
        "http.request.remoteaddr": remote,
        "http.request.method": request.method,
        "http.request.uri": target,
        "http.request.useragent": agent,
        "http.request.referer": request.headers.get("Referer", ""),
        "http.request.read": received,
        "http.response.status": response.status,
        "http.response.written": response.body_length,
        "http.response.duration": round(duration, 6),
    }
    if who is not None:
        fields["auth.user.name"] = who
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    referer = request.headers.get("Referer", "-")
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    message = (
        f'{remote} [{when}] "{request.method} {target} {version}" {response.status} {response.body_length} '
        f"{_quoted(referer)} {_quoted(agent)} {duration:.6f}s id={rid}" + (f" user={_quoted(who)}" if who else "")
    )
    ACCESS_LOGGER.info("response completed", extra={FIELDS: fields, TEXT: message})
