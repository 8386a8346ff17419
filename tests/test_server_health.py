"""Liveness and readiness of a real registry with two workers (issue 13, and issue 7's "the disk filling up shows
in health and metrics"): readiness turns 503, naming the failing check, when storage becomes unwritable, when free
space drops below `storage.minfree`, and when the database goes away; and 200 again once repaired."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_cluster import PostgresCluster
from proc_stat import processes
from test_server_database_faults import can_make_immutable as can_make_immutable
from test_server_full_disk import small_disk as small_disk
from test_server_observability import metrics_config, scrape, total, value

from registry_api import unique_repo
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="health endpoints of docker-registry 3")

FAST_CHECKS = {"interval": "300ms", "threshold": 2}


def fast_health(debug_port: int, **extra: Any) -> dict[str, Any]:
    config = metrics_config(debug_port)
    config["health"] = {"storagedriver": FAST_CHECKS, "database": FAST_CHECKS, **extra}
    return config


def readiness_becomes(url: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """Poll `/readyz` (fresh connections: both workers answer it) until it answers `status` five times in a row."""
    deadline = time.monotonic() + timeout
    streak, body, seen = 0, {}, 0
    while streak < 5:
        response = httpx.get(f"{url}/readyz", headers={"Connection": "close"}, timeout=10)
        seen = response.status_code
        streak = streak + 1 if seen == status else 0
        body = response.json()
        assert time.monotonic() < deadline, f"readiness stayed {seen}: {body}"
        time.sleep(0.05)
    return body


def assert_alive(url: str) -> None:
    response = httpx.get(f"{url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readiness_answers_fast_without_credentials(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(workers=2, extra_config={"health": {"storagedriver": FAST_CHECKS}})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        for _ in range(200):
            assert client.get("/readyz").status_code == 200
        assert time.monotonic() - started < 5, "polling readiness must be cheap"
        body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert set(body["checks"]) == {"storagedriver_filesystem", "database"}
    assert_alive(server.url)


@pytest.mark.usefixtures("can_make_immutable")
def test_readiness_follows_storage_writability(make_registry: Callable[..., RegistryProcess]) -> None:
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=fast_health(debug_port))
    root = server.data_dir
    readiness_becomes(server.url, 200)
    subprocess.run(["chattr", "+i", str(root)], check=True)
    try:
        body = readiness_becomes(server.url, 503)
        assert body["failing"] == ["storagedriver_filesystem"]
        assert "error" not in body["checks"]["storagedriver_filesystem"], "no details on the public port"
        debug = httpx.get(f"http://127.0.0.1:{debug_port}/debug/health")
        assert debug.status_code == 503
        assert list(debug.json()) == ["storagedriver_filesystem"]
        assert "Operation not permitted" in debug.json()["storagedriver_filesystem"]
        assert value(scrape(debug_port), "registry_health_check_up", check="storagedriver_filesystem") == 0
        assert_alive(server.url)
        assert httpx.get(f"{server.url}/v2/").status_code == 200, "without health.unavailable the API still answers"
    finally:
        subprocess.run(["chattr", "-i", str(root)], check=True)
    body = readiness_becomes(server.url, 200)
    assert body["checks"]["storagedriver_filesystem"]["healthy"]
    assert value(scrape(debug_port), "registry_health_check_up", check="storagedriver_filesystem") == 1


@pytest.mark.usefixtures("can_make_immutable")
def test_a_read_only_registry_on_a_read_only_volume_is_ready(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(
        workers=2,
        extra_config={
            "storage": {"maintenance": {"readonly": {"enabled": True}}},
            "health": {"storagedriver": FAST_CHECKS},
        },
    )
    subprocess.run(["chattr", "+i", str(server.data_dir)], check=True)
    try:
        time.sleep(1.5)  # several runs of the check
        body = readiness_becomes(server.url, 200)
        assert body["checks"]["storagedriver_filesystem"]["checked"] is not None
    finally:
        subprocess.run(["chattr", "-i", str(server.data_dir)], check=True)


@pytest.mark.usefixtures("can_make_immutable")
def test_readiness_follows_a_database_that_refuses_writes(make_registry: Callable[..., RegistryProcess]) -> None:
    """A database file gone read-only (an immutable file here; a read-only mount, a PostgreSQL standby) still
    answers reads, so the check passed and the registry stayed ready while every push was answered 503."""
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=fast_health(debug_port))
    database = [str(server.data_dir / name) for name in ("registry.db", "registry.db-wal")]
    readiness_becomes(server.url, 200)
    subprocess.run(["chattr", "+i", *database], check=True)
    try:
        body = readiness_becomes(server.url, 503)
        assert body["failing"] == ["database"], body
        reason = httpx.get(f"http://127.0.0.1:{debug_port}/debug/health").json()["database"]
        assert "not writable" in reason, reason
        assert value(scrape(debug_port), "registry_health_check_up", check="database") == 0
        assert httpx.post(f"{server.url}/v2/{unique_repo('ro')}/blobs/uploads/").status_code == 503
        assert_alive(server.url)
    finally:
        subprocess.run(["chattr", "-i", *database], check=True)
    readiness_becomes(server.url, 200)


def test_readiness_and_metrics_follow_free_space_below_minfree(
    make_registry: Callable[..., RegistryProcess],
    small_disk: Path,
) -> None:
    debug_port = free_port()
    server = make_registry(
        workers=2,
        storage={"filesystem": {"rootdirectory": str(small_disk / "data")}, "minfree": "10MiB"},
        extra_config=fast_health(debug_port, unavailable=True),
    )
    readiness_becomes(server.url, 200)
    filler = small_disk / "filler"
    with open(filler, "wb") as out:  # beside the registry's data: someone else filling the volume
        out.write(b"\0" * (8 * 1024 * 1024))
    try:
        body = readiness_becomes(server.url, 503)
        assert body["failing"] == ["diskspace"], body
        assert "below storage.minfree" in httpx.get(f"http://127.0.0.1:{debug_port}/debug/health").json()["diskspace"]
        refused = httpx.get(f"{server.url}/v2/")
        assert refused.status_code == 503, "health.unavailable: the API answers 503 while unhealthy"
        assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert "diskspace" in refused.json()["errors"][0]["message"]
        time.sleep(5.5)  # the inventory is computed at most every 5 s
        samples = scrape(debug_port)
        assert value(samples, "registry_storage_free_bytes") < value(samples, "registry_storage_minfree_bytes")
        assert value(samples, "registry_storage_minfree_bytes") == 10 * 1024 * 1024
        assert value(samples, "registry_health_check_up", check="diskspace") == 0
    finally:
        filler.unlink()
    readiness_becomes(server.url, 200)
    assert httpx.get(f"{server.url}/v2/").status_code == 200


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.remove()


def test_readiness_follows_the_database(
    make_registry: Callable[..., RegistryProcess], postgres: PostgresCluster
) -> None:
    debug_port = free_port()
    config = fast_health(debug_port)
    config["database"] = {"url": postgres.url}
    server = make_registry(workers=2, extra_config=config)
    readiness_becomes(server.url, 200)
    postgres.stop()
    try:
        body = readiness_becomes(server.url, 503)
        assert body["failing"] == ["database"], body
        assert body["checks"]["database"]["failures"] >= 2
        assert value(scrape(debug_port), "registry_health_check_up", check="database") == 0
        assert_alive(server.url)
    finally:
        postgres.start()
    readiness_becomes(server.url, 200, timeout=30)
    assert httpx.get(f"{server.url}/v2/_catalog").status_code == 200


def _signal_cluster(cluster: PostgresCluster, signum: int) -> None:
    """Send `signum` to the cluster's postmaster and every process it started (backends, writers)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    for pid, fields in processes():
        if pid == postmaster or int(fields[1]) == postmaster:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def test_a_scrape_answers_while_the_database_hangs(
    make_registry: Callable[..., RegistryProcess], postgres: PostgresCluster
) -> None:
    """A database server that stops answering (frozen here; a network partition, a failover under way) made every
    scrape wait for its inventory query, past Prometheus' scrape timeout: the whole scrape failed, the request
    counts and `registry_health_check_up{check="database"} 0` with it. The store's figures are left out instead."""
    debug_port = free_port()
    config = fast_health(debug_port)
    config["database"] = {"url": postgres.url}
    server = make_registry(workers=1, extra_config=config)
    readiness_becomes(server.url, 200)
    assert value(scrape(debug_port), "registry_repositories") == 0
    assert ("registry_repositories", frozenset()) in scrape(debug_port)
    _signal_cluster(postgres, signal.SIGSTOP)
    try:
        readiness_becomes(server.url, 503, timeout=40)  # a hung probe fails after 10 s, and the threshold is 2
        for _ in range(2):  # the second while the first's query still hangs
            started = time.monotonic()
            samples = scrape(debug_port)
            assert time.monotonic() - started < 8, "a scrape must answer within Prometheus' default 10 s"
            assert ("registry_repositories", frozenset()) not in samples, "store figures left out, not stale"
            assert value(samples, "registry_health_check_up", check="database") == 0
            assert total(samples, "registry_http_requests_total", route="readyz") > 0
            time.sleep(5.5)
    finally:
        _signal_cluster(postgres, signal.SIGCONT)
    readiness_becomes(server.url, 200, timeout=30)


class Downstream:
    """A real HTTP server on loopback answering HEAD with a status the test sets, recording the headers it got."""

    def __init__(self) -> None:
        owner = self
        self.status = 200
        self.location = ""
        """Sent as `Location` with a 3xx status."""
        self.headers: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                owner.headers.append(dict(self.headers))
                self.send_response(owner.status)
                if 300 <= owner.status < 400:
                    self.send_header("Location", owner.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def listen(port: int) -> socket.socket:
    """A TCP listener on `port` that accepts every connection and closes it, until the socket is closed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed by the test
            while True:
                listener.accept()[0].close()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def test_file_http_and_tcp_checks_turn_readiness_503_and_back(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """Distribution's `health.file`, `health.http` and `health.tcp`, against a real file, a real HTTP server and a
    real TCP listener: each failure shows in `/readyz` (by name) and `/debug/health` (with the reason), and readiness
    comes back once it is repaired."""
    flag, downstream, tcp_port = tmp_path / "maintenance", Downstream(), free_port()
    listener = listen(tcp_port)
    uri = f"http://127.0.0.1:{downstream.port}/ping"
    checks = {"interval": "200ms", "threshold": 1}
    debug_port = free_port()
    config = fast_health(
        debug_port,
        file=[{"file": str(flag), **checks}],
        http=[{"uri": f"{uri}?token=s3cret", "headers": {"X-Probe": ["registry"]}, "timeout": "2s", **checks}],
        tcp=[{"addr": f"127.0.0.1:{tcp_port}", "timeout": "2s", **checks}],
    )
    server = make_registry(workers=2, extra_config=config)
    debug = f"http://127.0.0.1:{debug_port}/debug/health"
    try:
        body = readiness_becomes(server.url, 200)
        assert {str(flag), uri, f"127.0.0.1:{tcp_port}"} <= set(body["checks"]), body
        assert downstream.headers[-1]["X-Probe"] == "registry"

        flag.write_text("down for maintenance\n")
        assert readiness_becomes(server.url, 503)["failing"] == [str(flag)]
        assert "file exists" in httpx.get(debug).json()[str(flag)]
        flag.unlink()
        readiness_becomes(server.url, 200)

        downstream.status = 500
        assert readiness_becomes(server.url, 503)["failing"] == [uri], "named without its query (the token)"
        assert "500" in httpx.get(debug).json()[uri]
        downstream.status = 200
        readiness_becomes(server.url, 200)

        downstream.status, downstream.location = 307, f"{uri}?token=s3cret"  # a redirect loop
        assert readiness_becomes(server.url, 503)["failing"] == [uri]
        reason = httpx.get(debug).json()[uri]
        assert "too many redirects" in reason, reason  # aiohttp's error named the URL, token and all
        downstream.status = 200
        readiness_becomes(server.url, 200)
        assert "s3cret" not in server.log_path.read_text()

        listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: the port refuses connections
        listener.close()
        assert readiness_becomes(server.url, 503)["failing"] == [f"127.0.0.1:{tcp_port}"]
        assert httpx.get(debug).status_code == 503
        listener = listen(tcp_port)
        readiness_becomes(server.url, 200)
        assert httpx.get(debug).json() == {}
    finally:
        listener.close()
        downstream.stop()
