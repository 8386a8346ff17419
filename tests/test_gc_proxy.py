"""Garbage collection of the pull-through cache (issue 12): cached content nobody pulled for the upstream's `ttl`
(at least `gc.delay`) is collected like deleted content, local repositories beside it are not, and a pull after
fetches it anew. Against a real CNCF Distribution upstream and `docker-registry garbage-collect`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gc_checks import pull_and_verify
from oci_content import OCI_MANIFEST
from proxy_upstreams import blob_gets, client_for
from registry_api import image_manifest, push, push_blob, random_bytes
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="garbage collection of this registry")


def blob_file(server: RegistryProcess, digest: str) -> Path:
    hex_digest = digest.removeprefix("sha256:")
    return server.data_dir / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def in_repository(server: RegistryProcess, table: str, repo: str) -> int:
    """Rows of `table` in the repository `repo`, read from the registry's database (SQLite or PostgreSQL)."""
    query = f"SELECT count(*) FROM {table} t JOIN repositories r ON r.id = t.repository_id WHERE r.name = "
    url = server.config().get("database", {}).get("url")
    if url is None:
        with sqlite3.connect(server.data_dir / "registry.db") as db:
            count: int = db.execute(query + "?", (repo,)).fetchone()[0]
        return count
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(query + "%s", (repo,)).fetchone()
        assert row is not None
        return int(row[0])


def collect(server: RegistryProcess, ttl: str) -> dict[str, Any]:
    """`docker-registry garbage-collect --json` on the server's configuration with the upstream's `ttl` changed."""
    config = yaml.safe_load((server.workdir / "config.yml").read_text())
    proxy = config["proxy"]
    (proxy["upstreams"][0] if "upstreams" in proxy else proxy)["ttl"] = ttl
    path = server.workdir / f"gc-{ttl}.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def pull(client: httpx.Client, repo: str, tag: str) -> list[str]:
    """Pull `repo:tag` through the cache completely; the digests of its blobs."""
    manifest = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert manifest.status_code == 200, manifest.text
    document = json.loads(manifest.content)
    digests = [d["digest"] for d in [document["config"], *document["layers"]]]
    for digest in digests:
        assert client.get(f"/v2/{repo}/blobs/{digest}").status_code == 200
    return digests


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_cached_content_not_pulled_within_ttl_is_collected_and_fetched_anew(
    upstream: RegistryProcess, tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    config: dict[str, Any] = {
        "proxy": {"upstreams": [{"prefix": "hub", "remoteurl": upstream.url}]},
        "gc": {"enabled": False, "delay": "0s"},
    }
    if database == "postgresql":
        config["database"] = {"url": request.getfixturevalue("postgres_cluster").new_database()}
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=config).start()
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            pushed = image_manifest(source, "library/alpine", layers=2)
            push(source, "library/alpine", pushed, "3")
            loose = push_blob(source, "library/alpine", random_bytes(3000))  # a blob pulled by digest alone
            digests = pull(client, "hub/library/alpine", "3")
            assert client.get(f"/v2/hub/library/alpine/blobs/{loose}").status_code == 200
            local = image_manifest(client, "team/local")
            push(client, "team/local", local, "v1")
            cached = [*digests, loose]
            wait_until(lambda: all(blob_file(cache, d).exists() for d in cached))
            wait_until(lambda: in_repository(cache, "proxy_pulls", "hub/library/alpine") == 1 + len(cached))

            # a long ttl: nothing cached is collected
            summary = collect(cache, "1h")
            assert summary["deleted"]["manifests"] == summary["deleted"]["blobs"] == 0
            assert all(blob_file(cache, d).exists() for d in cached)
            assert in_repository(cache, "tags", "hub/library/alpine") == 1
            assert in_repository(cache, "repository_blobs", "hub/library/alpine") == len(cached)

            # ttl 0 and no delay: the cached image and the loose blob go, tag, manifest, links, files and pull rows
            summary = collect(cache, "0s")
            assert summary["deleted"]["manifests"] == 1
            assert summary["deleted"]["blobs"] == len(cached)
            assert not any(blob_file(cache, d).exists() for d in cached)
            for table in ("tags", "manifests", "repository_blobs", "proxy_pulls"):
                assert in_repository(cache, table, "hub/library/alpine") == 0, table
            # the local image beside it is whole
            pull_and_verify(client, "team/local", "v1")
            assert in_repository(cache, "tags", "team/local") == 1

            # pulled again: fetched anew from the upstream, byte for byte
            fetched = {d: blob_gets(upstream, d) for d in cached}
            again = client.get("/v2/hub/library/alpine/manifests/3", headers={"Accept": OCI_MANIFEST})
            assert again.status_code == 200
            assert again.content == pushed.body
            assert pull(client, "hub/library/alpine", "3") == digests
            assert client.get(f"/v2/hub/library/alpine/blobs/{loose}").status_code == 200
            wait_until(lambda: all(blob_gets(upstream, d) == fetched[d] + 1 for d in cached))
            wait_until(lambda: all(blob_file(cache, d).exists() for d in cached))
    finally:
        cache.stop()


def test_in_mirror_mode_every_repository_is_cache_and_expires(upstream: RegistryProcess, tmp_path: Path) -> None:
    config = {"proxy": {"remoteurl": upstream.url}, "gc": {"enabled": False, "delay": "0s"}}
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=config).start()
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            pushed = image_manifest(source, "library/busybox")
            push(source, "library/busybox", pushed, "1")
            digests = pull(client, "library/busybox", "1")
            wait_until(lambda: all(blob_file(cache, d).exists() for d in digests))

            assert collect(cache, "1h")["deleted"]["manifests"] == 0
            assert in_repository(cache, "tags", "library/busybox") == 1
            summary = collect(cache, "0s")
            assert summary["deleted"]["manifests"] == 1
            assert not any(blob_file(cache, d).exists() for d in digests)
            assert in_repository(cache, "manifests", "library/busybox") == 0
            assert pull(client, "library/busybox", "1") == digests
    finally:
        cache.stop()
