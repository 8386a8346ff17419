"""The store's counts for a scrape (`metrics.inventory`): a count slower than a scrape waits is served when done."""

from __future__ import annotations

import asyncio

import pytest

from docker_registry.server.metrics import inventory


async def test_a_count_finished_after_a_scrape_stopped_waiting_is_the_next_scrapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A count slower than the scrape's patience (a large PostgreSQL database) was thrown away when it finished
    and started again at every scrape: its figures never showed, and one count was always running."""
    monkeypatch.setattr(inventory, "PATIENCE", 0.05)
    started: list[int] = []

    async def count() -> int:
        started.append(len(started))
        await asyncio.sleep(0.15)
        return len(started)

    figure = inventory._Slow(count)
    with pytest.raises(TimeoutError):
        await figure.get()  # the first scrape gives up; the count goes on
    await asyncio.sleep(0.2)
    assert await figure.get() == 1  # the next scrape gets it, at once
    assert started == [0]
    with pytest.raises(TimeoutError):
        await figure.get()  # taken: a new count starts
    assert started == [0, 1]
    await asyncio.sleep(0.2)


async def test_a_failed_count_is_reported_once_then_counted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "PATIENCE", 0.5)
    outcomes = iter([RuntimeError("database unavailable"), 7])

    async def count() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    figure = inventory._Slow(count)
    with pytest.raises(RuntimeError, match="database unavailable"):
        await figure.get()
    assert await figure.get() == 7
