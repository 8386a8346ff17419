"""Several registry nodes (separate `docker-registry serve` processes on their own ports) over one storage directory
and one PostgreSQL database, as behind a load balancer: any node serves any request, including the next chunk of an
upload another node began or that a dead node left, and a tag moved through one node is what the others serve at
once, although each keeps its caches (PostgreSQL's notifications drop them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from postgres_cluster import PostgresCluster

from docker_registry.server.registry.upload_area import upload_path
from registry_api import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    assert_error,
    canonical,
    descriptor,
    get_manifest,
    image_manifest,
    push,
    push_blob,
    random_bytes,
    sha256,
    start_upload,
    unique_repo,
    with_params,
)
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="nodes sharing our metadata database")

Nodes = list[RegistryProcess]
_starters = ThreadPoolExecutor(3, thread_name_prefix="node-start")
"""Starts nodes at once. Never shut down: a server dies with the thread that started it (PR_SET_PDEATHSIG is
per thread), and idle pool threads live on."""


def start_nodes(workdir: Path, database_url: str, count: int = 3) -> Nodes:
    """`count` nodes started at once on a new database: they migrate it one after the other."""
    storage = {"filesystem": {"rootdirectory": str(workdir / "shared")}, "delete": {"enabled": True}}
    # the second node spells the URL as docs/configuration.md does: plain `postgresql://` means psycopg 3 too
    urls = [database_url, database_url.replace("postgresql+psycopg://", "postgresql://")]
    nodes = [
        RegistryProcess(
            workdir / f"node{i}", workers=1, storage=storage, extra_config={"database": {"url": urls[i % 2]}}
        )
        for i in range(count)
    ]
    starts = [_starters.submit(node.start) for node in nodes]
    failed = [f.exception() for f in starts if f.exception() is not None]
    if failed:
        stop_nodes(nodes)
        raise AssertionError(f"nodes failed to start: {failed}")
    return nodes


def stop_nodes(nodes: Nodes) -> None:
    for node in nodes:
        node.stop()


@pytest.fixture
def nodes(tmp_path: Path, postgres_cluster: PostgresCluster) -> Iterator[Nodes]:
    started = start_nodes(tmp_path, postgres_cluster.new_database())
    yield started
    stop_nodes(started)
    for node in started:
        assert "Traceback" not in node.log_path.read_text(errors="replace"), node.log_path


def client(node: RegistryProcess) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=30, verify=False)  # plain HTTP: skip loading CAs


def path_of(location: str) -> str:
    """An upload's `Location` without its host, to send the next request to another node."""
    url = httpx.URL(location)
    return url.raw_path.decode()


def test_chunks_of_one_upload_alternate_between_nodes(nodes: Nodes) -> None:
    repo, data = unique_repo("nodes-chunks"), random_bytes(6 * 1024 * 1024 + 777)
    clients = [client(n) for n in nodes]
    location = path_of(start_upload(clients[0], repo))
    chunk = 1024 * 1024
    for i, start in enumerate(range(0, len(data), chunk)):
        piece = data[start : start + chunk]
        answer = clients[(i + 1) % 3].patch(
            location,
            content=piece,
            headers={"Content-Range": f"{start}-{start + len(piece) - 1}", "Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 202, answer.text
        assert answer.headers["Range"] == f"0-{start + len(piece) - 1}"
        location = path_of(answer.headers["Location"])
    status = clients[2].get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(data) - 1}"
    done = clients[1].put(with_params(location, digest=sha256(data)))
    assert done.status_code == 201, done.text
    for c in clients:
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
        c.close()


def test_push_through_one_pull_through_another_delete_through_a_third(nodes: Nodes) -> None:
    a, b, c = (client(n) for n in nodes)
    repo = unique_repo("nodes-ppd")
    manifest = image_manifest(a, repo, layers=2)
    push(a, repo, manifest, "v1")
    pulled = get_manifest(b, repo, "v1")
    assert pulled.status_code == 200
    assert pulled.content == manifest.body
    for layer in json.loads(manifest.body)["layers"]:
        assert len(b.get(f"/v2/{repo}/blobs/{layer['digest']}").content) == layer["size"]
    assert get_manifest(a, repo, "v1").status_code == 200  # cached on a, b and c now
    assert get_manifest(c, repo, "v1").status_code == 200
    assert c.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    for node in (a, b, c):
        assert_error(get_manifest(node, repo, "v1"), 404, "MANIFEST_UNKNOWN")
        assert_error(get_manifest(node, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")
        node.close()


def test_a_tag_moved_through_one_node_is_served_by_the_others_at_once(nodes: Nodes) -> None:
    """Each node caches the tag (a second GET is a cache hit); every move through a must show on b and c at once."""
    a, b, c = (client(n) for n in nodes)
    repo = unique_repo("nodes-tag")
    manifests = [image_manifest(a, repo) for _ in range(3)]
    for m in manifests:
        push(a, repo, m)
    for round_ in range(30):
        target = manifests[round_ % 3]
        push(a, repo, target, "moving")
        for reader in (b, c, b, c):  # the repeat reads from the node's cache
            got = get_manifest(reader, repo, "moving")
            assert got.headers["Docker-Content-Digest"] == target.digest, f"round {round_}: a stale tag was served"
    for node in (a, b, c):
        node.close()


def test_concurrent_pushes_of_one_image_through_different_nodes(nodes: Nodes) -> None:
    repo = unique_repo("nodes-race")
    config = canonical({"architecture": "amd64", "os": "linux", "race": repo})
    layers = [random_bytes(200_000 + i) for i in range(3)]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_GZIP, layer) for layer in layers],
    }
    body = canonical(document)
    contents = [config, *layers]

    def push_all(i: int) -> list[int]:
        with client(nodes[i % 3]) as c:
            for data in contents:
                push_blob(c, repo, data)
            answer = c.put(f"/v2/{repo}/manifests/latest", content=body, headers={"Content-Type": OCI_MANIFEST})
            tagged = c.put(f"/v2/{repo}/manifests/v{i % 2}", content=body, headers={"Content-Type": OCI_MANIFEST})
            return [answer.status_code, tagged.status_code]

    with ThreadPoolExecutor(9) as pool:
        assert list(pool.map(push_all, range(9))) == [[201, 201]] * 9
    for node in nodes:
        with client(node) as c:
            assert c.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest", "v0", "v1"]
            got = get_manifest(c, repo, "latest")
            assert got.content == body
            assert got.headers["Docker-Content-Digest"] == sha256(body)
            for data in contents:
                assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    fsck = subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "fsck", str(nodes[0].workdir / "config.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_node_killed_mid_upload_the_upload_finishes_on_another(nodes: Nodes) -> None:
    a, b = nodes[0], nodes[1]
    repo, data = unique_repo("nodes-kill"), random_bytes(5 * 1024 * 1024)
    with client(a) as c:
        location = path_of(start_upload(c, repo))
        first = c.patch(location, content=data[: 1024 * 1024], headers={"Content-Range": f"0-{1024 * 1024 - 1}"})
        assert first.status_code == 202, first.text
        location = path_of(first.headers["Location"])
    # a second PATCH that a is still receiving when it dies
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    rest = len(data) - 1024 * 1024
    sock.sendall(
        f"PATCH {location} HTTP/1.1\r\nHost: {a.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: {1024 * 1024}-{len(data) - 1}\r\nContent-Length: {rest}\r\n\r\n".encode()
    )
    sock.sendall(data[1024 * 1024 : 3 * 1024 * 1024])
    upload_id = location.split("?")[0].rstrip("/").rsplit("/", 1)[1]
    stored = Path(a.storage["filesystem"]["rootdirectory"]) / upload_path(upload_id)
    deadline = time.monotonic() + 20
    while stored.stat().st_size <= 1024 * 1024:  # a is writing the second PATCH when it dies
        assert time.monotonic() < deadline, "the second PATCH never reached storage"
        time.sleep(0.02)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGKILL)  # the master and its worker, as a crashed node
    a.proc.wait()
    a.proc = None
    sock.close()
    began = time.monotonic()
    with client(b) as c:
        status = c.get(location)
        assert status.status_code == 204, status.text
        offset = int(status.headers["Range"].split("-")[1]) + 1
        assert 1024 * 1024 <= offset <= 3 * 1024 * 1024
        done = c.put(
            with_params(location, digest=sha256(data)),
            content=data[offset:],
            headers={"Content-Range": f"{offset}-{len(data) - 1}", "Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        assert time.monotonic() - began < 5, "another node on this host takes a dead node's upload over at once"
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    with client(nodes[2]) as c:
        assert c.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_a_node_that_loses_postgresql_answers_503_then_recovers(tmp_path: Path) -> None:
    """Its own cluster: this one is stopped (as a crash would) and started again."""
    cluster = PostgresCluster().start()
    try:
        nodes = start_nodes(tmp_path, cluster.new_database(), count=2)
        try:
            _lose_and_recover(cluster, nodes)
        finally:
            stop_nodes(nodes)
    finally:
        cluster.remove()


def _lose_and_recover(cluster: PostgresCluster, nodes: Nodes) -> None:
    a, b = (client(n) for n in nodes)
    repo = unique_repo("nodes-outage")
    manifest = image_manifest(a, repo)
    push(a, repo, manifest, "v1")
    for c in (a, b, a, b):
        assert get_manifest(c, repo, "v1").status_code == 200  # in the caches now
    cluster.stop()
    try:
        time.sleep(0.5)
        for c in (a, b):
            answer = get_manifest(c, repo, "v1")
            assert answer.status_code == 503, f"{answer.status_code}: a node without its database served a tag"
            assert "Retry-After" in answer.headers
            assert c.post(f"/v2/{repo}/blobs/uploads/").status_code == 503
        time.sleep(2)
    finally:
        cluster.start()
    deadline = time.monotonic() + 30
    for c in (a, b):
        while (answer := get_manifest(c, repo, "v1")).status_code != 200:
            assert time.monotonic() < deadline, f"no recovery: {answer.status_code} {answer.text}"
            time.sleep(0.2)
        assert answer.content == manifest.body
    moved = image_manifest(a, repo)
    push(a, repo, moved, "v1")
    assert get_manifest(b, repo, "v1").headers["Docker-Content-Digest"] == moved.digest
    a.close()
    b.close()
