"""The benchmark's measuring tools against real servers on loopback: numbers parsed, failures counted, bytes checked.

Run with `python3 -m pytest bench`. Needs wrk, hey and curl (`apt-get install wrk hey curl`), and for the upload
test CNCF Distribution (`apt-get install docker-registry`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import loadgen
import pytest
import rawhttp
import servers
import transfer


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
