"""The request id: one per request, sent back as `X-Request-Id` and written in the access log, so a client's report
and the log line of its request can be matched.

An id the client (or a proxy in front) sent is kept when it looks like one, so a request can be traced across
hops; anything else (too long, odd characters that could forge log fields) is replaced by one of ours. Ours are a
random prefix drawn once per process and a counter: unique across workers and restarts, and cheaper than a UUID
on every request.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets

from aiohttp import web
from multidict import istr

HEADER = "X-Request-Id"
_LOOKUP = istr(HEADER)
"""The header's name as the case-insensitive key a request's headers are looked up by, made once (a plain `str` is
folded at every lookup: ~400 instructions of the ~7,500 that giving a request its id costs)."""
KEY: web.RequestKey[str] = web.RequestKey("docker_registry.request_id", str)
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
"""Also characters JSON never escapes: notification events carry the id as it is."""


class _Ids:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Called again in a forked child: workers must not share the master's prefix."""
        self.prefix = secrets.token_hex(6)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):06x}"


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def assign(request: web.BaseRequest) -> str:
    """Give `request` its id, taken from its `X-Request-Id` if sane, else made up. Called first thing for every
    request (`http.errors.errors_middleware`), so that `request_id` then finds it: a missed lookup raises a
    `KeyError` inside aiohttp's `__getitem__`, and raising and catching it costs ~3,700 instructions (callgrind),
    about 1% of a cached manifest GET."""
    incoming = request.headers.get(_LOOKUP)
    value = incoming if incoming is not None and _SANE.fullmatch(incoming) else _ids.next()
    request[KEY] = value
    return value


def request_id(request: web.BaseRequest) -> str:
    """The request's id (`assign`); the same on every call."""
    try:  # not `request.get`: a Python-level `Mapping.get` around this same lookup
        return request[KEY]
    except KeyError:  # a request no middleware saw (one aiohttp refused before routing)
        return assign(request)
