"""A freshly started pull-through cache prepares its first pull before any client asks (`proxy/warm.py`): it opens
a connection to the upstream in the background and rehearses its database writes, storing nothing; an upstream
that never answers holds up neither its start nor its stop."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from oci_content import OCI_MANIFEST
from proxy_upstreams import client_for, distribution, mirror, upstream_requests
from registry_api import image_manifest, push


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_fresh_cache_asks_its_upstream_at_start_stores_nothing_and_then_pulls(tmp_path: Path) -> None:
    upstream = distribution(tmp_path / "upstream")
    try:
        with client_for(upstream) as source:
            pushed = image_manifest(source, "library/app", layers=2)
            push(source, "library/app", pushed, "v1")
        pings = upstream_requests(upstream, "GET", "")  # `GET /v2/` (the test's own readiness probes included)
        cache = mirror(tmp_path / "cache", upstream.url)
        try:
            # before any client pull: each worker opened its upstream connection with a `GET /v2/`
            assert wait_for(lambda: upstream_requests(upstream, "GET", "") > pings)
            assert upstream_requests(upstream, "GET", "library/app/manifests/v1") == 0
            with httpx.Client(base_url=cache.url, timeout=60) as client:
                assert client.get("/v2/_catalog").json() == {"repositories": []}  # the rehearsal stored nothing
                manifest = client.get("/v2/library/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
                assert manifest.status_code == 200, manifest.text
                assert manifest.content == pushed.body
                document = json.loads(manifest.content)
                for descriptor in [document["config"], *document["layers"]]:
                    blob = client.get(f"/v2/library/app/blobs/{descriptor['digest']}")
                    assert blob.status_code == 200
                    assert len(blob.content) == descriptor["size"]
                assert client.get("/v2/_catalog").json() == {"repositories": ["library/app"]}
        finally:
            cache.stop()
    finally:
        upstream.stop()


def test_a_cache_whose_upstream_never_answers_starts_serves_and_stops_promptly(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # connections are accepted by the kernel, never answered
    try:
        cache = mirror(tmp_path / "cache", f"http://127.0.0.1:{silent.getsockname()[1]}")
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                assert client.get("/v2/").status_code == 200
                assert client.get("/v2/_catalog").json() == {"repositories": []}
        finally:
            started = time.monotonic()
            cache.stop()
            assert time.monotonic() - started < 10.0  # the warm-up request still hanging did not hold it up
    finally:
        silent.close()
