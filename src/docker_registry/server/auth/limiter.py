"""Failed logins limited per client address: after `MAX_FAILURES` within `WINDOW_SECONDS` from one address,
requests with credentials from it get 429 TOOMANYREQUESTS for `BLOCK_SECONDS`.

Counted per worker process (each worker keeps its own tally), on the address of the connection: behind a proxy
every client shares the proxy's address.
"""

from __future__ import annotations

import time
from collections import deque

MAX_FAILURES = 10
WINDOW_SECONDS = 60.0
BLOCK_SECONDS = 60.0
MAX_ADDRESSES = 100_000
"""Tracked addresses per worker; beyond it the oldest tallies are dropped."""


class FailureLimiter:
    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def blocked_for(self, address: str) -> float:
        """Seconds the address stays blocked; 0 when it may try."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    def failed(self, address: str) -> None:
        now = time.monotonic()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
            times = self._failures[address] = deque()
        times.append(now)
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) >= MAX_FAILURES:
            self._blocked[address] = now + BLOCK_SECONDS
            del self._failures[address]
            if len(self._blocked) > MAX_ADDRESSES:
                self._blocked.pop(next(iter(self._blocked)))
