"""Plain counters of the notification queue, per endpoint, for whoever exports metrics.

Deliveries run in the one process holding the lease, so that process's counters are the registry's; the others
report zeros for deliveries and only count the pull events they had to drop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class EndpointStats:
    pending: int = 0
    """Events recorded and not yet given to this endpoint (queue depth), as of the deliverer's last look."""
    delivered: int = 0
    """Events the endpoint acknowledged (2xx or 3xx)."""
    failures: int = 0
    """Delivery attempts that failed (refused, unreachable, timed out, answered 4xx or 5xx)."""
    dropped: int = 0
    """Events older than `notifications.events.maxage` skipped before the endpoint took them."""


@dataclass(slots=True)
class Stats:
    endpoints: dict[str, EndpointStats]
    pulls_lost: int = 0
    """Pull events this process could not record (the database unavailable while its buffer was full)."""
    delivering: bool = False
    """True while this process holds the delivery lease."""

    @classmethod
    def of(cls, names: list[str]) -> Stats:
        return cls({name: EndpointStats() for name in names})
