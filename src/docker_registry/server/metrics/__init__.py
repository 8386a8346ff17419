"""Prometheus metrics (issue 13): what each worker counts, and the one exposition that sums every worker.

Workers count into prometheus_client's multiprocess files (one set per process, in a directory the master makes
for the run and removes at the end, `multiprocess`); the debug listener, served by one worker, reads them all at
each scrape and adds the metadata store's and the disk's figures (`inventory`). Requests are counted after their
response is sent (`requests`), storage operations by a wrapper around the driver (`driver`), database statements
by SQLAlchemy's cursor events (`database`), cache look-ups by the caches' own tallies (`caches`).
"""
