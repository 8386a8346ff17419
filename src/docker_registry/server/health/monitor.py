"""Health checks run in the background, each at its own interval, and their results kept in memory: a probe that
polls readiness every second costs a dictionary look-up, never a disk write or a query.

A check turns unhealthy once it failed `threshold` times in a row (Distribution's meaning) and healthy again at its
first success. Until its first run a check counts as passing: a worker that just started is not kept out of service
for the length of one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]
"""Returns when the checked thing is fine; raises with a message saying what is wrong otherwise."""
PROBE_TIMEOUT = 10.0
"""A probe that hangs (a stuck NFS mount, a database that accepts but never answers) fails after this long."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    probe: Probe
    interval: float
    threshold: int


@dataclass(slots=True)
class CheckState:
    failures: int = 0
    """Failures in a row (0 after a success)."""
    error: str | None = None
    """What the last failure said; None after a success."""
    checked: float | None = None
    """When the check last ran (seconds since the epoch)."""


class HealthMonitor:
    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self.states: dict[str, CheckState] = {}
        self.generation = 0
        """Bumped whenever a check has run, so endpoints can cache their answer in between."""

    def add(self, check: Check) -> None:
        self.checks[check.name] = check
        self.states[check.name] = CheckState()
        self.generation += 1

    def failing(self) -> list[str]:
        """Checks that failed `threshold` times in a row, by name."""
        return [name for name, state in self.states.items() if state.failures >= self.checks[name].threshold]

    def passing(self) -> dict[str, bool]:
        return {name: state.failures < self.checks[name].threshold for name, state in self.states.items()}

    async def run_once(self, check: Check) -> None:
        state = self.states[check.name]
        healthy_before = state.failures < check.threshold
        try:
            await asyncio.wait_for(check.probe(), max(check.interval, PROBE_TIMEOUT))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.failures += 1
            state.error = _describe(exc)
        else:
            state.failures, state.error = 0, None
        state.checked = time.time()
        healthy = state.failures < check.threshold
        self.generation += 1
        if healthy != healthy_before:
            if healthy:
                log.warning("health check %s passes again", check.name)
            else:
                log.error("health check %s failed %d time(s) in a row: %s", check.name, state.failures, state.error)

    async def _loop(self, check: Check) -> None:
        while True:
            await self.run_once(check)
            await asyncio.sleep(check.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run every check at its interval while the block runs (the worker's life)."""
        tasks = [asyncio.create_task(self._loop(check), name=f"health:{check.name}") for check in self.checks.values()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = " ".join(str(exc).split())[:300]
    return text or type(exc).__name__
