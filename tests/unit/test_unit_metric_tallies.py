"""Timings tallied in any thread (database statements, storage operations) reach prometheus_client's histograms at
flush exactly as one `observe()` per timing would have, and nothing before."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from docker_registry.server.metrics.flushing import Flushed, FlushedTogether
from docker_registry.server.metrics.instruments import QUERY_BUCKETS, Instruments
from docker_registry.server.metrics.queues import QueueMetrics
from docker_registry.server.metrics.tallies import HistogramTally
from docker_registry.server.notifications.stats import Stats

TIMINGS = [0.00005, 0.0001, 0.0003, 0.001, 0.001, 0.02, 0.7, 4.0, 9.0]
THREADS = 4
ROUNDS = 500


def _histogram(registry: CollectorRegistry) -> Any:
    return Histogram("q_seconds", "q", ["operation"], buckets=QUERY_BUCKETS, registry=registry)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_timings_from_many_threads_equal_one_observe_each_after_the_flush() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    direct_family, tallied_family = _histogram(direct), _histogram(tallied)
    tally = HistogramTally(tallied_family, QUERY_BUCKETS)

    def work(kind: str) -> None:
        for _ in range(ROUNDS):
            for seconds in TIMINGS:
                tally.observe((kind,), seconds)

    kinds = ["select", "insert", "select", "update"][:THREADS]
    threads = [threading.Thread(target=work, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for kind in kinds:
        for _ in range(ROUNDS):
            for seconds in TIMINGS:
                direct_family.labels(kind).observe(seconds)

    assert all(line.startswith("#") for line in _exposition(tallied)), "nothing reaches the histogram before a flush"
    tally.flush()
    tally.flush()  # a second flush adds nothing
    assert _exposition(tallied) == _exposition(direct)


class _Recording(Flushed):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def flush(self) -> None:
        self.log.append(self.name)


def test_tallies_flushed_together_flush_in_their_order() -> None:
    log: list[str] = []
    FlushedTogether([_Recording("storage", log), _Recording("queries", log), _Recording("requests", log)]).flush()
    assert log == ["storage", "queries", "requests"]


def test_a_bound_series_shows_at_zero_before_its_first_timing() -> None:
    registry = CollectorRegistry()
    tally = HistogramTally(_histogram(registry), QUERY_BUCKETS)
    tally.bind(("select",))
    tally.flush()
    lines = _exposition(registry)
    assert 'q_seconds_count{operation="select"} 0.0' in lines
    assert not any('operation="insert"' in line for line in lines)


def test_lost_pull_events_are_counted_once_each() -> None:
    """A worker's pull events lost while the database was away (its buffer full) were counted in a field no metric
    read: nothing showed the loss."""
    stats = Stats.of(["ci"])
    instruments = Instruments()
    registry = CollectorRegistry()
    registry.register(instruments.notifications_pulls_lost)
    queues = QueueMetrics(lambda: stats, instruments)
    stats.pulls_lost = 3
    queues.flush()
    queues.flush()
    stats.pulls_lost = 5
    queues.flush()
    assert "registry_notifications_pull_events_lost_total 5.0" in _exposition(registry)
