"""The benchmark's measuring tools against real servers on loopback: numbers parsed, failures counted, bytes checked.

Run with `python3 -m pytest bench`. Needs wrk, hey and curl (`apt-get install wrk hey curl`), and for the upload
test CNCF Distribution (`apt-get install docker-registry`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import connection_cost
import idle
import images
import loadgen
import profile_writes
import proxy_steps
import pytest
import rawhttp
import request_costs
import run
import servers
import smallwrites
import transfer
from postgres_cluster import PostgresCluster

from oci_content import OCI_MANIFEST


def need(tool: str, package: str) -> None:
    if not shutil.which(tool):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is missing: apt-get install {package}")
        pytest.skip(f"{tool} is missing: apt-get install {package}")


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blob") / "blob.bin"
    transfer.random_file(path, 3 * 1024 * 1024 + 17)
    return path


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory, blob: Path) -> Iterator[servers.Server]:
    server = servers.static_file(tmp_path_factory.mktemp("static"), blob).start()
    yield server
    server.stop()


def test_download_client_reads_the_whole_body(static: servers.Server, blob: Path) -> None:
    size = blob.stat().st_size
    assert rawhttp.download(f"{static.url}/blob") == size
    assert transfer.get_mbps(f"{static.url}/blob", 3, size) > 0


def test_download_client_refuses_an_error_status(static: servers.Server) -> None:
    with pytest.raises(rawhttp.HTTPError, match="expected 200, got 404"):
        rawhttp.download(f"{static.url}/missing")


def test_curl_download_checks_the_size(static: servers.Server, blob: Path) -> None:
    need("curl", "curl")
    assert transfer.curl_get_mbps(f"{static.url}/blob", 2, blob.stat().st_size) > 0
    with pytest.raises(RuntimeError, match="expected 5 each"):
        transfer.curl_get_mbps(f"{static.url}/blob", 1, 5)


def test_wrk_figures_and_failures(static: servers.Server) -> None:
    need("wrk", "wrk")
    ok = loadgen.wrk_get(f"{static.url}/health", 4, 1, loadgen.MANIFEST_ACCEPT)
    assert ok.rps > 0
    assert ok.p99_ms > 0
    assert ok.requests > 0
    assert ok.failures == 0
    missing = loadgen.wrk_get(f"{static.url}/missing", 4, 1, loadgen.MANIFEST_ACCEPT)
    assert missing.failures == missing.requests > 0


def test_wrk_pipelined_and_pinned(static: servers.Server) -> None:
    """`pipeline` sends requests 4 at a time (wrk_pipeline.lua) and every answer is still counted and checked."""
    need("wrk", "wrk")
    need("taskset", "util-linux")
    ok = loadgen.wrk_get(f"{static.url}/health", 2, 1, loadgen.MANIFEST_ACCEPT, threads=1, cpus="0", pipeline=4)
    assert ok.requests > 0
    assert ok.failures == 0
    missing = loadgen.wrk_get(f"{static.url}/missing", 2, 1, loadgen.MANIFEST_ACCEPT, threads=1, pipeline=4)
    assert missing.failures == missing.requests > 0


def test_hey_head_figures_and_failures(static: servers.Server) -> None:
    need("hey", "hey")
    ok = loadgen.hey(f"{static.url}/health", 4, 1, method="GET")
    assert ok.rps > 0
    assert ok.p99_ms > 0
    assert ok.requests > 0
    assert ok.failures == 0
    missing = loadgen.hey(f"{static.url}/missing", 4, 1)
    assert missing.failures == missing.requests > 0


def test_uploads_land_whole_in_a_registry(tmp_path: Path, blob: Path) -> None:
    need(servers.DISTRIBUTION_BINARY, "docker-registry")
    registry = servers.distribution(tmp_path / "distribution").start()
    try:
        for chunk in (None, 1024 * 1024):
            assert transfer.upload_mbps(registry.url, "bench/test", blob, chunk) > 0
            with blob.open("rb") as f:
                digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            url = f"{registry.url}/v2/bench/test/blobs/{digest}"
            assert rawhttp.download(url) == blob.stat().st_size
    finally:
        registry.stop()
    assert registry.proc is None


def test_splice_client_reads_whole_bodies_on_one_connection(static: servers.Server, blob: Path) -> None:
    size = blob.stat().st_size
    with rawhttp.SplicedDownloads(static.url) as client:
        assert [client.get(f"{static.url}/blob") for _ in range(3)] == [size] * 3
    assert rawhttp.spliced_download(f"{static.url}/blob") == size
    assert transfer.get_mbps(f"{static.url}/blob", 3, size) > 0


def test_raw_connection_reads_no_body_after_a_head(static: servers.Server, blob: Path) -> None:
    """A HEAD's Content-Length is its GET's: waiting for that many bytes would hang until the timeout."""
    with rawhttp.Connection(static.url, timeout=5) as conn:
        head = conn.request(f"{static.url}/blob", "HEAD")
        assert (head.status, head.body, int(head.header("content-length"))) == (200, b"", blob.stat().st_size)
        assert conn.request(f"{static.url}/health").body == b"ok"  # the connection is still in step


def test_connection_cost_measures_ours_and_bare_aiohttp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = sys.argv
    sys.argv = ["connection_cost.py", "--requests", "20", "--rounds", "2", "--workers", "1"]
    try:
        assert connection_cost.main() == 0
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "| GET /v2/, new connection |" in out
    assert "ours: a connection costs" in out
    assert "bare aiohttp: a connection costs" in out


def test_blocking_sendfile_server_serves_the_whole_file(tmp_path: Path, blob: Path) -> None:
    server = servers.sendfile_file(tmp_path, blob).start()
    try:
        with rawhttp.SplicedDownloads(server.url) as client:
            assert [client.get(f"{server.url}/blob") for _ in range(2)] == [blob.stat().st_size] * 2
        assert rawhttp.download(f"{server.url}/blob") == blob.stat().st_size
        with pytest.raises(rawhttp.HTTPError, match="expected 200, got 404"):
            rawhttp.spliced_download(f"{server.url}/missing")
    finally:
        server.stop()


def test_splice_client_refuses_an_error_status(static: servers.Server) -> None:
    with pytest.raises(rawhttp.HTTPError, match="expected 200, got 404"):
        rawhttp.spliced_download(f"{static.url}/missing")


@contextmanager
def scripted_server(answers: list[list[bytes]]) -> Iterator[str]:
    """One connection; each request is answered with its list of pieces, sent apart so they arrive separately,
    then the connection closes: the awkward servers a download client must not be fooled by."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for pieces in answers:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                for piece in pieces:
                    conn.sendall(piece)
                    time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/blob"
    finally:
        thread.join(timeout=10)
        listener.close()


def test_splice_client_parses_headers_that_arrive_in_pieces() -> None:
    body = os.urandom(300_000)
    pieces = [b"HTTP/1.1 200 OK\r\nContent-", b"Length: 300000\r\n", b"\r\n" + body[:10], body[10:]]
    with scripted_server([pieces, pieces]) as url, rawhttp.SplicedDownloads(url, timeout=10) as client:
        assert client.get(url) == len(body)
        assert client.get(url) == len(body)


def test_splice_client_refuses_a_body_shorter_than_announced() -> None:
    answer = [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x" * 999]
    with scripted_server([answer]) as url, pytest.raises(rawhttp.HTTPError, match="closed after 999 of 1000 bytes"):
        rawhttp.spliced_download(url, timeout=10)


def test_splice_client_refuses_a_body_longer_than_announced() -> None:
    answer = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"x" * 15]
    with scripted_server([answer, answer]) as url, rawhttp.SplicedDownloads(url, timeout=10) as client:
        assert client.get(url) == 10
        with pytest.raises(rawhttp.HTTPError, match="not an HTTP response"):
            client.get(url)


def test_splice_client_refuses_a_response_without_content_length() -> None:
    answer = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]
    with scripted_server([answer]) as url, pytest.raises(rawhttp.HTTPError, match="no Content-Length"):
        rawhttp.spliced_download(url, timeout=10)


def test_splice_client_refuses_headers_cut_short() -> None:
    with (
        scripted_server([[b"HTTP/1.1 200 OK\r\n", b"Content-Length: 10\r\n"]]) as url,
        pytest.raises(rawhttp.HTTPError, match="closed in the response headers"),
    ):
        rawhttp.spliced_download(url, timeout=10)


def test_page_cache_ceilings(blob: Path) -> None:
    assert transfer.page_cache_mbps(blob) > 0
    assert transfer.splice_read_mbps(blob) > 0


def test_small_layer_is_a_whole_tar_of_about_the_size_asked() -> None:
    blob, diff_id = images.small_layer(20_000)
    assert 19_500 <= len(blob) <= 20_500
    tar_bytes = gzip.decompress(blob)
    assert diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (member,) = tar.getmembers()
        data = tar.extractfile(member)
        assert data is not None
        assert len(data.read()) == member.size > 18_000
    assert images.small_layer(20_000)[0] != blob  # fresh random bytes every time


def test_small_layout_lists_every_layer(tmp_path: Path) -> None:
    sent = images.build_small_layout(tmp_path / "layout", 4, 5_000)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    assert len(manifest["layers"]) == 4
    for layer in manifest["layers"]:
        assert (blobs / layer["digest"][7:]).stat().st_size == layer["size"]
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    assert len(config["rootfs"]["diff_ids"]) == 4
    assert sent == sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"] + len(
        (blobs / index["manifests"][0]["digest"][7:]).read_bytes()
    )


@pytest.fixture(scope="module")
def durable_postgres() -> Iterator[PostgresCluster]:
    """A cluster as `run.py --database postgres` starts it: fsync on."""
    cluster = PostgresCluster(durable=True).start()
    yield cluster
    cluster.remove()


@pytest.fixture(params=["ours", "ours-postgres", "distribution"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[servers.Server]:
    if request.param == "ours":
        server = servers.ours(tmp_path / "ours", 2)
    elif request.param == "ours-postgres":
        server = servers.ours(tmp_path / "ours", 2, request.getfixturevalue("durable_postgres"))
    else:
        need(servers.DISTRIBUTION_BINARY, "docker-registry")
        server = servers.distribution(tmp_path / "distribution")
    server.start()
    yield server
    server.stop()


def test_small_write_loads_land_in_a_registry(registry: servers.Server) -> None:
    base = registry.url
    for action, requests in ((smallwrites.blob_patch_put, 3), (smallwrites.blob_post_put, 2)):
        blobs = smallwrites.random_blobs(12, 20_000)
        load = smallwrites.run(base, blobs, 4, action(base, "bench/small"))
        assert (load.items, load.requests, load.failures) == (12, 12 * requests, 0), load.first_error
        assert load.seconds > 0
        assert load.items_per_second > 0
        for data, digest in blobs[:3]:
            assert rawhttp.download(f"{base}/v2/bench/small/blobs/{digest}") == len(data)

    image = images.seed_image(base, "bench/source", "latest")
    repos = [f"bench/mounted-{i}" for i in range(10)]
    load = smallwrites.run(base, repos, 3, smallwrites.mount_and_manifest(base, "bench/source", image))
    assert (load.items, load.requests, load.failures) == (10, 30, 0), load.first_error
    assert rawhttp.download(f"{base}/v2/bench/mounted-7/blobs/{image.layer}") == image.layer_size

    tags = [f"t{i}" for i in range(10)]
    load = smallwrites.run(base, tags, 3, smallwrites.tag_put(base, "bench/source", image))
    assert (load.items, load.requests, load.failures) == (10, 10, 0), load.first_error
    listed = json.loads(rawhttp.request(f"{base}/v2/bench/source/tags/list").body)["tags"]
    assert set(tags) < set(listed)


def test_small_write_load_counts_failures_and_goes_on(registry: servers.Server) -> None:
    blobs = smallwrites.random_blobs(6, 1000)
    blobs[2] = (blobs[2][0], blobs[3][1])  # a wrong digest: refused
    load = smallwrites.run(registry.url, blobs, 2, smallwrites.blob_post_put(registry.url, "bench/fail"))
    assert (load.items, load.failures) == (5, 1)
    assert "expected 201, got 400" in load.first_error


def test_durable_cluster_commits_with_fsync_and_counts_its_closed_backends_cpu(
    durable_postgres: PostgresCluster,
) -> None:
    """The cluster's CPU is what `cpu_seconds` adds to a registry on PostgreSQL: a backend whose connection has
    closed still counts (the postmaster reaped it), or a load that opens connections would look cheap."""
    import psycopg

    dsn = durable_postgres.url.replace("+psycopg", "")
    before = durable_postgres.cpu_seconds()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{backend}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{backend}").exists()
    assert durable_postgres.cpu_seconds() - before >= 0.1


def test_cpu_of_a_registry_on_postgresql_includes_the_clusters(
    durable_postgres: PostgresCluster, tmp_path: Path
) -> None:
    server = servers.ours(tmp_path / "ours", 1, durable_postgres)
    assert server.config is not None
    assert server.config["database"]["url"].startswith("postgresql+psycopg://")
    server.start()
    try:
        ours, cluster = run.cpu_seconds(server), durable_postgres.cpu_seconds()
        blobs = smallwrites.random_blobs(60, 1000)
        load = smallwrites.run(server.url, blobs, 4, smallwrites.blob_post_put(server.url, "bench/pg"))
        assert load.failures == 0, load.first_error
        cluster_used = durable_postgres.cpu_seconds() - cluster
        assert cluster_used > 0
        assert run.cpu_seconds(server) - ours >= cluster_used
        assert run.cpu_seconds(server, nice_at_most=19) < run.cpu_seconds(server)  # the workers' own only
    finally:
        server.stop()


def test_skopeo_pushes_at_once(tmp_path: Path) -> None:
    need("skopeo", "skopeo")
    need(servers.DISTRIBUTION_BINARY, "docker-registry")
    registry = servers.distribution(tmp_path / "distribution").start()
    try:
        copies = []
        for i in range(2):
            images.build_small_layout(tmp_path / f"layout{i}", 3, 2_000)
            copies.append(
                (f"oci:{tmp_path / f'layout{i}'}:{images.REF_NAME}", f"docker://127.0.0.1:{registry.port}/b/{i}:x")
            )
        assert images.skopeo_copies_seconds(copies) > 0
        for i in range(2):
            r = rawhttp.request(f"{registry.url}/v2/b/{i}/manifests/x", headers={"Accept": OCI_MANIFEST})
            assert r.status == 200
            assert len(json.loads(r.body)["layers"]) == 3
        with pytest.raises(RuntimeError, match="skopeo copy"):
            images.skopeo_copies_seconds(
                [(f"oci:{tmp_path / 'missing'}:x", f"docker://127.0.0.1:{registry.port}/b/m:x")]
            )
    finally:
        registry.stop()


def test_profile_summaries_of_collapsed_stacks(tmp_path: Path) -> None:
    loop = "run_forever (asyncio/base_events.py:607);Handle._run (asyncio/events.py:80)"
    pool = "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);_WorkItem.run (x.py:1)"
    raw = tmp_path / "pyspy-ours-1.txt"
    raw.write_text(
        f"{pool};UploadQueries.claim_upload (server/store/uploads.py:80);expect (sqlalchemy/sql/coercions.py:323) 6\n"
        f"{loop};put_upload (server/http/v2/uploads.py:90);to_thread (asyncio/threads.py:25) 3\n"
        f"{loop};RequestHandler.start (aiohttp/web_protocol.py:500) 1\n"
    )
    categories = profile_writes.categorise([raw])
    assert "60.0%  pool: SQLAlchemy: statements built, compiled, cache keys" in categories
    assert "30.0%  loop: handing work to threads and back" in categories
    assert "10.0%  loop: aiohttp: parsing, routing, responses" in categories
    summary = profile_writes.summarise_profile([raw])
    assert "10 samples" in summary
    assert "60.0%  expect (sql/coercions.py)" in summary


def test_counted_server_counts_a_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_COUNTS_DIR", str(tmp_path / "counts"))
    server = profile_writes.counted_ours(tmp_path / "ours", 1).start()
    try:
        before = profile_writes.counts(server, tmp_path / "counts")
        load = smallwrites.run(
            server.url, smallwrites.random_blobs(2, 2000), 1, smallwrites.blob_patch_put(server.url, "c/x")
        )
        assert load.failures == 0, load.first_error
        counted = profile_writes.counts(server, tmp_path / "counts") - before
        threads = profile_writes.thread_cpu(profile_writes.workers_of(server))
    finally:
        server.stop()
    assert counted["db.write_transaction"] >= 2  # each blob's durable link, whatever else changes
    assert counted["writer_hop"] >= 6  # each blob's POST, PATCH and durable link at least
    assert any(pid == tid for pid, tid in threads)


def test_idle_connections_stay_open_and_are_counted(registry: servers.Server) -> None:
    """The idle crowd of the manifest GET variant: each connection asked once and is still open afterwards."""
    with idle.IdleConnections("127.0.0.1", registry.port, 200) as crowd:
        assert len(crowd.sockets) == 200
        assert crowd.still_open() == 200
        crowd.sockets[0].close()
        crowd.sockets[0] = socket.create_connection(("127.0.0.1", registry.port))
        crowd.sockets[0].shutdown(socket.SHUT_RDWR)
        assert crowd.still_open() == 199


def test_proxy_steps_read_both_access_logs() -> None:
    ours = (
        '2026-12-05 08:58:16,470 INFO [12445] aiohttp.access: 127.0.0.1 [05/Dec/2026:08:58:16 +0000] "GET '
        '/v2/bench/proxied/blobs/sha256:5f3cb42368f7e58f813af8c410fd7273aa611cad558f551f8dd391926e61705d HTTP/1.1" '
        '200 20983919 "-" "skopeo/1.9.3" 1.187145s id=1e14355b5269-000004\n'
        "2026-12-05 08:58:18,167 INFO [12445] docker_registry.server: worker 0 (pid 12445) draining requests\n"
    )
    theirs = (
        'time="2026-12-05T08:58:15.225361325Z" level=info msg="response completed" go.version=go1.19.8 '
        "http.request.method=HEAD http.request.uri=/v2/bench/proxied/manifests/latest "
        'http.request.useragent="Python/3.11 aiohttp/3.14.5" http.response.duration="951.524µs" '
        "http.response.status=200 http.response.written=753\n"
        'time="2026-12-05T08:58:16.306Z" level=info msg="response completed" http.request.method=GET '
        'http.request.uri="/v2/a/blobs/sha256:9408" http.response.duration=1m2.5s http.response.status=200\n'
        'time="2026-12-05T08:58:16.306Z" level=info msg="authorized request" http.request.method=GET\n'
    )
    [blob] = proxy_steps.our_steps(ours)
    assert (blob.method, blob.status, blob.size, blob.seconds) == ("GET", 200, 20983919, 1.187145)
    assert blob.worker == 12445
    assert "sha256:5f3cb42368f7 " in blob.describe()
    assert blob.describe().endswith("pid 12445")
    assert proxy_steps.spread([blob, blob, proxy_steps.Step("GET", "/v2/a/blobs/x", 200, 1, 0.1, 7)]) == [2, 1]
    head, get = proxy_steps.distribution_steps(theirs)
    assert (head.method, head.path, head.size) == ("HEAD", "/v2/bench/proxied/manifests/latest", 753)
    assert abs(head.seconds - 951.524e-6) < 1e-12
    assert (get.size, get.seconds) == (0, 62.5)


def test_notify_pieces_times_each_piece_in_the_workers() -> None:
    need("wrk", "wrk")
    tool = Path(__file__).parent / "notify_pieces.py"
    args = ["--rounds", "1", "--seconds", "1", "--connections", "4"]
    result = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=300, check=True)
    calls = {}
    for line in result.stdout.splitlines():
        label, _, rest = line.strip().partition("  ")
        if "calls" in rest:
            calls[label] = int(rest.split("(")[1].split(" calls")[0].replace(",", ""))
    pieces = ["Recorder.pulled", "request_id, inside pulled", "pulled_target", "request metrics observer"]
    assert all(calls.get(piece, 0) >= 100 for piece in pieces), result.stdout
    assert calls.get("Events.pull_row (flush)", 0) >= 1, result.stdout
    assert calls.get("metrics flush", 0) >= 1, result.stdout


def test_interleaved_rounds_reverse_the_order_every_other_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import run

    monkeypatch.setattr(run, "cpu_seconds", lambda server: 0.0)
    ours, dist = servers.Server("ours", tmp_path, []), servers.Server("distribution", tmp_path, [])
    bench = run.Bench(run.Settings.quick(), ours, dist, tmp_path)
    seen: list[tuple[int, str]] = []

    def measure(server: servers.Server, r: int) -> float:
        seen.append((r, server.name))
        return 1.0

    bench.interleaved(4, measure, "alternating")
    assert [name for _, name in seen] == ["ours", "distribution", "distribution", "ours"] * 2
    seen.clear()
    bench.interleaved(2, measure, "in order", alternate=False)
    assert [name for _, name in seen] == ["ours", "distribution"] * 2
    assert bench.work["alternating"] == {"ours": 4.0, "distribution": 4.0}


def test_request_costs_pushes_blobs_as_skopeo_does(registry: servers.Server) -> None:
    """`request_costs.Push`: each blob's requests, one phase after another, leave it stored and verifiable."""
    push = request_costs.Push(registry.url, "bench/costs", [os.urandom(20_000) for _ in range(3)])
    for kind in request_costs.KINDS:
        request_costs.in_threads(3, 2, lambda i, kind=kind: push.request(kind, i))
    for data, digest in zip(push.blobs, push.digests, strict=True):
        assert rawhttp.request(f"{registry.url}/v2/bench/costs/blobs/{digest}").body == data
    with pytest.raises(RuntimeError, match="HEAD miss: 200"):
        push.request("HEAD miss", 0)  # a blob there now: the phase's expectation is checked
