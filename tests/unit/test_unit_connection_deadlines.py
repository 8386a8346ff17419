"""Connection deadlines (`runtime.connections.ConnectionTracker.overdue`): which open connections a sweep closes."""

from __future__ import annotations

from docker_registry.server.runtime.connections import ConnectionLimits, ConnectionTracker

LIMITS = ConnectionLimits(header_timeout=2.0, idle_timeout=5.0)


def test_a_silent_connection_is_overdue_after_the_header_timeout() -> None:
    tracker, silent = ConnectionTracker(), object()
    tracker.accepted[silent] = 100.0
    assert tracker.overdue([silent], LIMITS, 101.0) == []
    assert tracker.overdue([silent], LIMITS, 102.5) == [silent]


def test_a_connection_swept_before_aiohttp_listed_it_still_gets_a_deadline() -> None:
    """The handler is noted when made, and listed among the server's connections a loop turn later: a sweep in
    between forgets the note (it looks closed). Under load, with many connections accepted at once, this happened
    (a silent connection held open for good)."""
    tracker, silent = ConnectionTracker(), object()
    tracker.accepted[silent] = 100.0
    assert tracker.overdue([], LIMITS, 100.5) == []  # made, not listed yet
    assert silent not in tracker.accepted
    assert tracker.overdue([silent], LIMITS, 101.0) == []  # first listed: its deadline counts from here
    assert tracker.overdue([silent], LIMITS, 103.5) == [silent]


def test_busy_connections_have_no_deadline_and_answered_ones_the_idle_timeout() -> None:
    tracker, busy, answered = ConnectionTracker(), object(), object()
    tracker.accepted.update({busy: 100.0, answered: 100.0})
    tracker.busy.add(busy)
    tracker.answered[answered] = 101.0
    assert tracker.overdue([busy, answered], LIMITS, 105.0) == []
    assert tracker.overdue([busy, answered], LIMITS, 106.5) == [answered]


def test_what_is_known_of_closed_connections_is_dropped() -> None:
    tracker, closed = ConnectionTracker(), object()
    tracker.accepted[closed] = 100.0
    tracker.answered[closed] = 101.0
    tracker.busy.add(closed)
    assert tracker.overdue([], LIMITS, 200.0) == []
    assert (tracker.accepted, tracker.answered, tracker.busy) == ({}, {}, set())
