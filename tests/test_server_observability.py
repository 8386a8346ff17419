"""Metrics, access logs and request ids of a real registry with two workers (issue 13).

The metrics test does a known sequence of pushes and pulls over fresh connections, so both workers serve some of
it (the access log's process ids show they did), then scrapes the debug listener once and finds exactly what was
done: the scrape sees every worker's counts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry_api import MANIFEST_ACCEPT, image_manifest, push, unique_repo
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="observability of docker-registry 3")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_config(debug_port: int, formatter: str = "json") -> dict[str, Any]:
    return {
        "log": {"formatter": formatter},
        "http": {"debug": {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}},
    }


def debug_health(debug_port: int, timeout: float = 10.0) -> httpx.Response:
    """`/debug/health`, once the first worker listens there (the registry may answer on its main port sooner)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{debug_port}/debug/health", timeout=10)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def scrape(debug_port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{debug_port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def fresh(url: str) -> httpx.Client:
    """A client whose every request opens a new connection: the kernel spreads them over the workers."""
    return httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"})


def access_lines(server: RegistryProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "aiohttp.access"]


def test_metrics_after_pushes_and_pulls_across_both_workers_match_what_was_done(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=metrics_config(debug_port))
    pushes, pulls, heads, missing = 4, 30, 20, 5
    layer_bytes = 0
    with fresh(server.url) as client:
        repos = [unique_repo("metrics") for _ in range(pushes)]
        images = []
        for repo in repos:
            image = image_manifest(client, repo, layers=2)
            push(client, repo, image, "v1")
            images.append(image)
            document = json.loads(image.body)
            layer_bytes += sum(d["size"] for d in [document["config"], *document["layers"]])
        for i in range(pulls):
            response = client.get(f"/v2/{repos[i % pushes]}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
            assert response.status_code == 200
        for i in range(heads):
            document = json.loads(images[i % pushes].body)
            assert client.head(f"/v2/{repos[i % pushes]}/blobs/{document['layers'][0]['digest']}").status_code == 200
        for i in range(missing):
            assert client.get(f"/v2/{repos[0]}/manifests/nothing-{i}").status_code == 404
        # the layers downloaded, 20 times each: the kernel sends the files (sendfile), past aiohttp's writer, and
        # they are still counted (their bytes then outweigh the headers of every blob answer)
        layers = [
            (repo, d) for repo, image in zip(repos, images, strict=True) for d in json.loads(image.body)["layers"]
        ]
        for _ in range(20):
            for repo, layer in layers:
                assert len(client.get(f"/v2/{repo}/blobs/{layer['digest']}").content) == layer["size"]

    served_by = {line["pid"] for line in access_lines(server) if line["http.request.uri"].startswith("/v2/")}
    assert len(served_by) == 2, f"both workers should have served requests, saw {served_by}"

    deadline = time.monotonic() + 10
    while True:  # counts land once each response is sent, and cache tallies once a second
        samples = scrape(debug_port)
        cache_lookups = total(samples, "registry_cache_requests_total")
        blob_gets = value(samples, "registry_http_requests_total", method="GET", route="blob", code="200")
        if value(samples, "registry_http_requests_total", method="HEAD", route="blob", code="200") == heads and (
            cache_lookups >= pulls and blob_gets == 20 * len(layers)
        ):
            break
        assert time.monotonic() < deadline, "the scrape never showed every request"
        time.sleep(0.3)

    def requests(method: str, route: str, code: str) -> float:
        return value(samples, "registry_http_requests_total", method=method, route=route, code=code)

    assert requests("PUT", "manifest", "201") == pushes
    assert requests("GET", "manifest", "200") == pulls
    assert requests("GET", "manifest", "404") == missing
    assert requests("HEAD", "blob", "200") == heads
    assert requests("POST", "blob-upload", "202") == pushes * 3  # config and two layers each
    assert requests("PUT", "blob-upload-chunk", "201") == pushes * 3
    assert value(samples, "registry_http_request_duration_seconds_count", method="GET", route="manifest") == (
        pulls + missing
    )
    assert not any(
        "/v2/" in dict(labels).get("route", "") for name, labels in samples if name.startswith("registry_http")
    ), "routes are names, never paths"
    assert value(samples, "registry_http_received_bytes_total", route="blob-upload-chunk") == layer_bytes
    assert value(samples, "registry_http_sent_bytes_total", route="manifest") > sum(len(i.body) for i in images)
    downloaded = 20 * sum(layer["size"] for _, layer in layers)
    sent = value(samples, "registry_http_sent_bytes_total", route="blob")  # with every answer's headers
    assert downloaded < sent < downloaded + 1000 * (20 * len(layers) + heads)
    blob_lines = [line for line in access_lines(server) if "/blobs/sha256:" in line["http.request.uri"]]
    assert sum(line["http.response.written"] for line in blob_lines) == sent
    written = {line["http.request.uri"]: line["http.response.written"] for line in blob_lines}
    for repo, layer in layers:  # each with its headers, a few hundred bytes
        assert layer["size"] < written[f"/v2/{repo}/blobs/{layer['digest']}"] < layer["size"] + 1000

    assert value(samples, "registry_repositories") == pushes
    assert value(samples, "registry_manifests") == pushes
    assert value(samples, "registry_blobs") == pushes * 3
    assert value(samples, "registry_blobs_bytes") == layer_bytes
    assert value(samples, "registry_upload_sessions") == 0
    assert value(samples, "registry_storage_free_bytes") > 0
    assert value(samples, "registry_storage_capacity_bytes") >= value(samples, "registry_storage_free_bytes")
    assert value(samples, "registry_health_check_up", check="storagedriver_filesystem") == 1
    assert value(samples, "registry_health_check_up", check="database") == 1

    # each blob published once: moved from the upload area, or (sent whole in its PUT) stored and published at once
    published = value(samples, "registry_storage_action_seconds_count", driver="filesystem", action="move")
    stored_whole = value(samples, "registry_storage_action_seconds_count", driver="filesystem", action="put_if_absent")
    assert published + stored_whole == pushes * 3
    assert total(samples, "registry_storage_action_seconds_count", action="write") + stored_whole >= pushes * 3
    assert total(samples, "registry_database_query_duration_seconds_count", operation="select") > 0
    assert total(samples, "registry_database_query_duration_seconds_count", operation="insert") > 0
    assert_documented_and_on_the_dashboard(samples)
    hits = total(samples, "registry_cache_requests_total", result="hit")
    misses = total(samples, "registry_cache_requests_total", result="miss")
    assert hits > 0
    assert misses > 0


DOCS = Path(__file__).resolve().parent.parent / "docs"


def assert_documented_and_on_the_dashboard(samples: Samples) -> None:
    """Every family the registry exposes is in docs/observability.md's table, and the Grafana dashboard uses only
    families that exist."""
    exposed = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in samples if name.startswith("registry_")}
    documented = set(re.findall(r"^\| `(registry_[a-z_]+)`", (DOCS / "observability.md").read_text(), re.MULTILINE))
    assert exposed <= documented, f"undocumented: {exposed - documented}"
    dashboard = (DOCS / "grafana-dashboard.json").read_text()
    json.loads(dashboard)
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"registry_[a-z_]+", dashboard)}
    used.discard("registry_")
    assert used <= exposed | documented, f"the dashboard uses unknown metrics: {used - exposed - documented}"
    assert used & exposed, "the dashboard uses none of the exposed metrics"


def test_debug_listener_is_bound_once_and_serves_health(make_registry: Callable[..., RegistryProcess]) -> None:
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=metrics_config(debug_port))
    assert debug_health(debug_port).json() == {}
    listening = [line for line in server.log_path.read_text().splitlines() if "debug listener on" in line]
    assert len(listening) == 1, listening
    assert httpx.get(f"{server.url}/metrics").status_code == 404, "the metrics stay off the main port"


def base_requests(debug_port: int, expected: float, timeout: float = 15.0) -> float:
    """`GET /v2/` answered 200 as the scrape counts them, once it shows `expected` (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = value(scrape(debug_port), "registry_http_requests_total", method="GET", route="base", code="200")
        except httpx.TransportError:  # the debug listener's worker is being restarted
            seen = -1.0
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_counts_outlive_killed_workers_and_the_debug_listener_comes_back(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=metrics_config(debug_port))
    time.sleep(1.5)  # the start-up check's request reaches the counts
    before = base_requests(debug_port, -2, timeout=0)
    with fresh(server.url) as client:
        for _ in range(20):
            assert client.get("/v2/").status_code == 200
    assert base_requests(debug_port, before + 20) == before + 20
    assert server.proc is not None
    workers = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 2, workers
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)  # worker 0, which holds the debug listener, among them
    assert base_requests(debug_port, before + 20) == before + 20, "the dead workers' counts stay in the totals"
    with fresh(server.url) as client:
        for _ in range(5):
            assert client.get("/v2/").status_code == 200
    assert base_requests(debug_port, before + 25) == before + 25
    listening = [line for line in server.log_path.read_text().splitlines() if "debug listener on" in line]
    assert len(listening) == 2, "bound again by the restarted first worker"


def _logfmt(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(line))


PASSWORD = "s3cret-pass-word"
TOKEN = "tok3n-secret-value"


@pytest.mark.parametrize("formatter", ["json", "logfmt", "text"])
def test_access_log_lines_parse_carry_the_request_id_and_never_credentials(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, formatter: str
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    server = make_registry(
        workers=2,
        extra_config={"log": {"formatter": formatter}, "auth": {"htpasswd": {"path": str(htpasswd)}}},
    )
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    wrong = base64.b64encode(f"alice:{PASSWORD}-wrong".encode()).decode()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ok = client.get(
            f"/v2/_catalog?n=5&access_token={TOKEN}",
            headers={"Authorization": f"Basic {basic}", "X-Request-Id": "trace-123.a", "User-Agent": "test agent/1"},
        )
        assert ok.status_code == 200
        assert ok.headers["X-Request-Id"] == "trace-123.a", "a sane incoming id is kept"
        refused = client.get("/v2/", headers={"Authorization": f"Basic {wrong}", "X-Request-Id": 'bad id"\n'[:7]})
        assert refused.status_code == 401
        generated = refused.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]{6,}", generated), generated
        assert client.head("/v2/").headers["X-Request-Id"] != generated
    time.sleep(0.5)
    log = server.log_path.read_text()
    for secret in (PASSWORD, basic, wrong, TOKEN):
        assert secret not in log, f"{secret} was logged"

    lines = [line for line in log.splitlines() if "trace-123.a" in line]
    assert len(lines) == 1, lines
    line = lines[0]
    if formatter == "text":
        assert re.search(
            r'\] "GET /v2/_catalog\?n=5&access_token=REDACTED HTTP/1\.1" 200 \d+ "-" "test agent/1" \d+\.\d+s '
            r'id=trace-123\.a user="alice"$',
            line,
        ), line
        return
    fields: dict[str, Any] = json.loads(line) if formatter == "json" else _logfmt(line)
    assert fields["http.request.id"] == "trace-123.a"
    assert fields["http.request.method"] == "GET"
    assert fields["http.request.uri"] == "/v2/_catalog?n=5&access_token=REDACTED"
    assert str(fields["http.response.status"]) == "200"
    assert int(fields["http.response.written"]) > 0
    assert float(fields["http.response.duration"]) >= 0
    assert fields["http.request.useragent"] == "test agent/1"
    assert fields["auth.user.name"] == "alice"
    assert fields["level"] == "info"
    generated_lines = [line for line in log.splitlines() if generated in line]
    assert len(generated_lines) == 1
    assert "401" in generated_lines[0]


def test_a_malformed_request_is_logged_without_its_credentials(make_registry: Callable[..., RegistryProcess]) -> None:
    """A request aiohttp cannot parse is logged as one line saying what was wrong; its parser's message quotes the
    offending line, which was logged as it was: a client's `Authorization` header ended by a bare LF, or a request
    line with a token and a control character, put the credentials in the log."""
    server = make_registry(workers=1)
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    requests = [
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\n\r\n".encode(),
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n".encode(),
        f"GET /v2/_catalog?access_token={TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ]
    ids = []
    for raw in requests:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(raw)
            answer = connection.recv(1024)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
        found = re.search(rb"\r\nX-Request-Id: ([^\r]+)\r\n", answer)
        assert found, f"every response carries its request id: {answer!r}"
        ids.append(found.group(1).decode())
    time.sleep(0.5)
    log = server.log_path.read_text()
    refused = [line for line in log.splitlines() if "refused a malformed request" in line]
    assert len(refused) == len(requests), refused
    for request_id in ids:  # the access log line of each shows the id its client was given
        assert len([line for line in log.splitlines() if "aiohttp.access" in line and f" id={request_id}" in line]) == 1
    for secret in (basic, TOKEN):
        assert secret not in log, f"{secret} was logged"


def test_web_ui_requests_are_counted_under_their_own_route(make_registry: Callable[..., RegistryProcess]) -> None:
    """The UI's pages matched no API route, so their 200s were counted as `route="none"`, the label documented for
    requests to no route (404s): a dashboard of unknown paths showed the UI's traffic, and the UI none."""
    debug_port = free_port()
    server = make_registry(workers=1, extra_config=metrics_config(debug_port))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/ui/").status_code == 200
        assert client.get("/ui/static/ui.css").status_code == 200
        assert client.get("/no/such/path").status_code == 404
    time.sleep(1.5)  # a flush
    samples = scrape(debug_port)
    assert value(samples, "registry_http_requests_total", method="GET", route="ui", code="200") == 2
    assert total(samples, "registry_http_requests_total", route="none") == 1
    assert value(samples, "registry_http_requests_total", method="GET", route="none", code="404") == 1


def test_request_id_on_every_response(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(workers=2)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [
            client.get("/v2/"),
            client.head("/v2/nothing/manifests/latest"),
            client.get("/not-the-api"),
            client.delete("/v2/"),
            client.get("/healthz"),
            client.get("/readyz"),
        ]
        too_long = client.get("/v2/", headers={"X-Request-Id": "x" * 200})
    ids = [answer.headers["X-Request-Id"] for answer in answers]
    assert len(set(ids)) == len(ids), ids
    assert too_long.headers["X-Request-Id"] != "x" * 200


def test_uploads_in_progress_count_every_workers_sessions(make_registry: Callable[..., RegistryProcess]) -> None:
    """`registry_upload_sessions` is the registry's uploads in progress, whichever worker began them: counted from
    the metadata store at scrape time, not per process. Finishing or cancelling an upload takes it off."""
    debug_port = free_port()
    server = make_registry(workers=2, extra_config=metrics_config(debug_port))
    repo = unique_repo("uploads-gauge")
    locations = []
    for _ in range(10):
        with fresh(server.url) as client:  # a connection each: both workers begin uploads
            begun = client.post(f"/v2/{repo}/blobs/uploads/")
            assert begun.status_code == 202
            locations.append(begun.headers["Location"])
    pids = {line["pid"] for line in access_lines(server) if line["http.request.uri"].endswith("/blobs/uploads/")}
    assert len(pids) == 2, f"both workers should have begun uploads, saw {pids}"
    uploads_become(debug_port, 10)

    blob = os.urandom(1000)
    with fresh(server.url) as client:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        finished = client.put(locations[0], params={"digest": digest}, content=blob)
        assert finished.status_code == 201
        assert client.delete(locations[1]).status_code == 204
    uploads_become(debug_port, 8)


def uploads_become(debug_port: int, expected: float, timeout: float = 20.0) -> None:
    """Scrape until the gauge shows `expected` (store figures are computed at most every 5 s)."""
    deadline = time.monotonic() + timeout
    while (seen := value(scrape(debug_port), "registry_upload_sessions")) != expected:
        assert time.monotonic() < deadline, f"registry_upload_sessions stayed {seen}, expected {expected}"
        time.sleep(0.5)


def test_a_download_its_client_abandons_is_logged_as_what_it_was_sent_not_a_server_error(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A pull cut by its client (Ctrl-C, a timeout, containerd resuming with a range later) was logged and counted
    as a 500 with a few hundred bytes: every interrupted pull raised the 5xx rate operators alert on. It is the 200
    its client was being sent, with the bytes that went out (Distribution logs the same)."""
    debug_port = free_port()
    server = make_registry(workers=1, extra_config=metrics_config(debug_port))
    repo = unique_repo("abandoned")
    blob = os.urandom(64 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with fresh(server.url) as client:
        begun = client.post(f"/v2/{repo}/blobs/uploads/")
        assert client.put(begun.headers["Location"], params={"digest": digest}, content=blob).status_code == 201
    received = 0
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        while received < 2 * 1024 * 1024:
            received += len(conn.recv(65536))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, as a killed client
    deadline = time.monotonic() + 20
    while not (lines := [line for line in access_lines(server) if line["http.request.uri"].endswith(f"s/{digest}")]):
        assert time.monotonic() < deadline, "the abandoned GET never reached the access log"
        time.sleep(0.2)
    assert str(lines[0]["http.response.status"]) == "200"
    assert received <= int(lines[0]["http.response.written"]) < len(blob)
    while total(samples := scrape(debug_port), "registry_http_requests_total", route="blob", method="GET") == 0:
        assert time.monotonic() < deadline, "the abandoned GET was never counted"
        time.sleep(0.2)  # counts are flushed to the scrape every so often
    assert value(samples, "registry_http_requests_total", route="blob", method="GET", code="200") == 1
    assert total(samples, "registry_http_requests_total", code="500") == 0
    assert value(samples, "registry_http_sent_bytes_total", route="blob") >= received
