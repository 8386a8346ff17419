"""Failed logins limited per client address: after `MAX_FAILURES` within `WINDOW_SECONDS` from one address,
requests with credentials from it get 429 TOOMANYREQUESTS for `BLOCK_SECONDS`.

Counted per worker process (each worker keeps its own tally), on the address of the connection: behind a proxy
every client shares the proxy's address. Checks of credentials under way count against what an address has left,
as failures to come: a burst of logins sent at once is checked a few at a time (the others wait their turn), so it
gets no more tries than a series would.
"""

from __future__ import annotations

import asyncio
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
        self._under_way: dict[str, int] = {}
        self._turns: dict[str, asyncio.Event] = {}

    async def admit(self, address: str) -> float:
        """Wait for a turn to check credentials from the address: admitted while its failures in the window and
        the checks under way add up to fewer than `MAX_FAILURES`. Seconds the address is blocked for, or 0 when
        admitted (`settle` must follow)."""
        while True:
            left = self.blocked_for(address)
            if left > 0:
                return left
            under_way = self._under_way.get(address, 0)
            if self._recent(address) + under_way < MAX_FAILURES:
                self._under_way[address] = under_way + 1
                return 0.0
            await self._turns.setdefault(address, asyncio.Event()).wait()

    def settle(self, address: str, *, failed: bool) -> None:
        """An admitted check ended: a failure is counted, and whoever waits for a turn looks again."""
        under_way = self._under_way.pop(address, 1) - 1
        if under_way > 0:
            self._under_way[address] = under_way
        if failed:
            self.failed(address)
        turn = self._turns.pop(address, None)
        if turn is not None:
            turn.set()

    def _recent(self, address: str) -> int:
        times = self._failures.get(address)
        if times is None:
            return 0
        while times and times[0] <= time.monotonic() - WINDOW_SECONDS:
            times.popleft()
        return len(times)

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
