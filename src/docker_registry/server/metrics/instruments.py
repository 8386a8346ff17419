"""Every metric family a worker updates, declared once. Distribution's names where the meaning is the same
(`registry_http_requests_total`, `registry_http_request_duration_seconds`, `registry_storage_action_seconds`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .tallies import HistogramTally

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""From half a millisecond (a cached manifest GET) to a minute (a large layer's PUT)."""
QUERY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Instruments:
    """The families; metrics are registered in no registry of their own (the exposition reads the worker files)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "registry_http_requests_total",
            "HTTP requests answered, by method, route (the API route's name) and status code",
            ["method", "route", "code"],
            registry=None,
        )
        self.duration = Histogram(
            "registry_http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.received = Counter(
            "registry_http_received_bytes_total", "Bytes of request bodies received, by route", ["route"], registry=None
        )
        self.sent = Counter(
            "registry_http_sent_bytes_total",
            "Bytes of responses written (headers included), by route",
            ["route"],
            registry=None,
        )
        self.storage_duration = Histogram(
            "registry_storage_action_seconds",
            "Storage driver operations, by driver and operation (action)",
            ["driver", "action"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.storage_errors = Counter(
            "registry_storage_errors_total",
            "Storage driver operations that raised (a missing object included), by driver and operation",
            ["driver", "action"],
            registry=None,
        )
        self.query_duration = Histogram(
            "registry_database_query_duration_seconds",
            "Metadata database statements, by kind (select, insert, update, delete, other)",
            ["operation"],
            buckets=QUERY_BUCKETS,
            registry=None,
        )
        self.storage_timings = HistogramTally(self.storage_duration, LATENCY_BUCKETS)
        """Storage operations are timed into this, `storage_duration` gets them at flush (see `tallies`)."""
        self.query_timings = HistogramTally(self.query_duration, QUERY_BUCKETS)
        """Likewise for database statements."""
        self.proxy_stale = Counter(
            "registry_proxy_stale_served_total",
            "Pulls through the pull-through cache served from what it holds while the upstream was unavailable, by "
            "what was served (tag, tags)",
            ["served"],
            registry=None,
        )
        self.cache = Counter(
            "registry_cache_requests_total",
            "Look-ups in the per-process caches, by cache (tags, manifests, blobs) and result (hit, miss)",
            ["cache", "result"],
            registry=None,
        )
        self.notifications_pending = Gauge(
            "registry_notifications_pending_events",
            "Events recorded and not yet delivered to the endpoint, as the delivering process last saw them",
            ["endpoint"],
            # only the process holding the delivery lease knows; a dead one's last figure leaves with it
            multiprocess_mode="livemax",
            registry=None,
        )
        self.notifications_delivered = Counter(
            "registry_notifications_delivered_total", "Events the endpoint acknowledged", ["endpoint"], registry=None
        )
        self.notifications_failures = Counter(
            "registry_notifications_failures_total",
            "Delivery attempts that failed (refused, unreachable, timed out, or answered 4xx or 5xx)",
            ["endpoint"],
            registry=None,
        )
        self.notifications_dropped = Counter(
            "registry_notifications_dropped_total",
            "Events older than notifications.events.maxage, skipped before the endpoint took them",
            ["endpoint"],
            registry=None,
        )
        self.notifications_pulls_lost = Counter(
            "registry_notifications_pull_events_lost_total",
            "Pull events a worker could not record: the database unavailable while its buffer was full",
            registry=None,
        )
