"""The pull-through cache as one registry, not one worker: single flight and the ttl clock across two workers (on
the filesystem and on S3 through moto) and across two nodes sharing PostgreSQL, blobs streamed on S3 as they
arrive and never half-cached, and access rules applied to the repository a containerd `?ns=` pull is served
from."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_cluster import PostgresCluster
from test_auth_htpasswd import write_htpasswd

from oci_content import OCI_MANIFEST
from proxy_upstreams import client_for, cutting_upstream, distribution, upstream_requests
from registry_api import assert_error, image_manifest, push, push_blob
from registry_process import RegistryProcess, implementation
from s3_server import MotoServer, shared_server

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the pull-through cache is ours")

MiB = 1024 * 1024
WORKERS = 2


def on_s3(moto: MotoServer) -> tuple[dict[str, Any], str]:
    """A storage section on a fresh bucket of the moto server (redirects on, as in production), and the bucket."""
    bucket = moto.bucket()
    return {"s3": moto.options(bucket, rootdirectory="registry"), "delete": {"enabled": True}}, bucket


def cache_on(storage: str, workdir: Path, proxy: dict[str, Any]) -> RegistryProcess:
    section = on_s3(shared_server())[0] if storage == "s3" else None
    return RegistryProcess(
        workdir, kind="ours", workers=WORKERS, storage=section, extra_config={"proxy": proxy}
    ).start()


def clients_on_every_worker(cache: RegistryProcess, per_worker: int) -> list[httpx.Client]:
    """`per_worker` clients whose kept-alive connection is served by each worker (known by the prefix of the
    request ids it answers with): requests sent through them are spread over both workers, not by chance."""
    by_worker: dict[str, list[httpx.Client]] = {}
    for _ in range(200):
        client = httpx.Client(base_url=cache.url, timeout=120, follow_redirects=True)
        worker = client.get("/v2/").headers["X-Request-Id"].rsplit("-", 1)[0]
        if len(by_worker.setdefault(worker, [])) < per_worker:
            by_worker[worker].append(client)
        else:
            client.close()
        if len(by_worker) == WORKERS and all(len(c) == per_worker for c in by_worker.values()):
            return [client for clients in by_worker.values() for client in clients]
    raise AssertionError(f"connections did not reach {WORKERS} workers: {list(by_worker)}")


def all_at_once(clients: list[httpx.Client], request: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    """Each client sends `request` at the same moment, from a thread of its own."""
    barrier = threading.Barrier(len(clients))
    answers: list[httpx.Response] = []
    errors: list[BaseException] = []

    def send(client: httpx.Client) -> None:
        try:
            barrier.wait()
            answers.append(request(client))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return answers


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """True once `condition` holds (the fetch ends, and tidies up, after its clients have their last byte)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def spooled(spool: Path) -> list[Path]:
    return list(spool.glob("proxy-spool/*"))


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_concurrent_cold_pulls_on_two_workers_cause_one_upstream_get_per_object(
    upstream: RegistryProcess, tmp_path: Path, storage: str
) -> None:
    repo = f"spread-{storage}/app"
    big = os.urandom(4 * MiB)
    with client_for(upstream) as source:
        pushed = image_manifest(source, repo, layers=1)
        push(source, repo, pushed, "v1")
        big_digest = push_blob(source, repo, big)
    config_digest = json.loads(pushed.body)["config"]["digest"]
    cache = cache_on(storage, tmp_path / "cache", {"remoteurl": upstream.url})
    clients = clients_on_every_worker(cache, 4)
    try:
        # a cold manifest by tag (ttl 0: each worker asks where the tag points, one of them fetches it)
        manifests = all_at_once(clients, lambda c: c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}))
        assert [(m.status_code, m.content) for m in manifests] == [(200, pushed.body)] * 8
        # a cold blob of 4 MiB, streamed to all eight from one fetch
        blobs = all_at_once(clients, lambda c: c.get(f"/v2/{repo}/blobs/{big_digest}"))
        assert [(b.status_code, b.content == big) for b in blobs] == [(200, True)] * 8
        # a cold manifest by digest, and a small blob
        by_digest = all_at_once(clients, lambda c: c.get(f"/v2/{repo}/manifests/{pushed.digest}"))
        assert {m.content for m in by_digest} == {pushed.body}
        configs = all_at_once(clients, lambda c: c.get(f"/v2/{repo}/blobs/{config_digest}"))
        fetched = [(b.status_code, "sha256:" + hashlib.sha256(b.content).hexdigest()) for b in configs]
        assert fetched == [(200, config_digest)] * 8
        time.sleep(0.5)  # Distribution writes its log line after the response
        # the tag's HEAD named the digest, fetched once (and never again by digest)
        assert upstream_requests(upstream, "GET", f"{repo}/manifests/{pushed.digest}") == 1
        assert upstream_requests(upstream, "GET", f"{repo}/manifests/v1") == 0
        assert upstream_requests(upstream, "GET", f"{repo}/blobs/{big_digest}") == 1
        assert upstream_requests(upstream, "GET", f"{repo}/blobs/{config_digest}") == 1
    finally:
        for client in clients:
            client.close()
        cache.stop()


def test_a_tag_pulled_through_both_workers_within_its_ttl_costs_one_upstream_head(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    repo = "ttl-shared/app"
    with client_for(upstream) as source:
        first = image_manifest(source, repo)
        push(source, repo, first, "latest")
    cache = cache_on("filesystem", tmp_path / "cache", {"remoteurl": upstream.url, "ttl": "1h"})
    clients = clients_on_every_worker(cache, 2)
    try:
        for client in clients:  # one after the other, two on each worker
            answer = client.get(f"/v2/{repo}/manifests/latest")
            assert answer.headers["Docker-Content-Digest"] == first.digest
        # and at once, eight of them
        answers = all_at_once(clients * 2, lambda c: c.get(f"/v2/{repo}/manifests/latest"))
        assert {a.headers["Docker-Content-Digest"] for a in answers} == {first.digest}
        time.sleep(0.5)
        assert upstream_requests(upstream, "HEAD", f"{repo}/manifests/latest") == 1
        assert (
            upstream_requests(upstream, "GET", f"{repo}/manifests/latest")
            + upstream_requests(upstream, "GET", f"{repo}/manifests/{first.digest}")
            == 1
        )
    finally:
        for client in clients:
            client.close()
        cache.stop()


def test_on_s3_a_cold_blob_streams_as_it_arrives_and_an_upstream_dying_mid_blob_keeps_nothing(tmp_path: Path) -> None:
    moto = shared_server()
    storage, bucket = on_s3(moto)
    spool = tmp_path / "spool"
    blob = os.urandom(8 * MiB)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    blob_key = f"registry/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
    # the first GET is cut after 1 MiB; later ones get the blob in 8 pieces over about 2 s
    with cutting_upstream(blob, cut_at=MiB, pieces=8, pause=0.25) as (url, gets):
        proxy = {"remoteurl": url, "spooldirectory": str(spool)}
        cache = RegistryProcess(tmp_path / "cache", kind="ours", storage=storage, extra_config={"proxy": proxy})
        cache.start()
        try:
            with httpx.Client(base_url=cache.url, timeout=60, follow_redirects=True) as client:
                received = 0
                try:
                    with client.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                        if answer.status_code == 200:
                            for chunk in answer.iter_raw():
                                received += len(chunk)
                        else:  # on a machine so loaded that the client had not started before the cut
                            answer.read()
                            assert_error(answer, 503, "UNAVAILABLE")
                except httpx.RemoteProtocolError:
                    assert 0 < received < len(blob)
                else:
                    assert received == 0
                # neither the blob nor a part of its upload, nor the spool file, once the fetch has ended
                assert eventually(lambda: moto.keys(bucket, "registry/") == [] and not spooled(spool))

                # the next GET fetches it whole, and the client has its first bytes long before the last
                started = time.monotonic()
                body = bytearray()
                first_byte = None
                with client.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                    assert answer.status_code == 200
                    for chunk in answer.iter_raw():
                        first_byte = first_byte or time.monotonic()
                        body += chunk
                last_byte = time.monotonic()
                assert bytes(body) == blob
                assert first_byte is not None
                assert first_byte - started < 1.5
                assert last_byte - first_byte > 1.0  # streamed while the upstream sent, not after
                assert gets[0] == 2
                assert eventually(lambda: moto.keys(bucket, "registry/blobs/") == [blob_key] and not spooled(spool))
                # cached: served from S3 (a redirect to it), the upstream not asked again
                cached = client.get(f"/v2/some/repo/blobs/{digest}")
                assert cached.content == blob
                assert cached.history
                assert cached.history[0].status_code == 307
                assert gets[0] == 2
        finally:
            cache.stop()


def test_on_s3_a_blob_asked_for_while_its_fetch_publishes_it_is_never_answered_404(tmp_path: Path) -> None:
    """Once the upstream sent the last byte, the fetch still uploads, pins, copies the blob to its place on S3 and
    links it: a client asking all along that time gets the blob (from the fetch, or from S3 once it is linked),
    never BLOB_UNKNOWN and never a redirect to an object not there yet."""
    moto = shared_server()
    storage, _ = on_s3(moto)
    blob = os.urandom(48 * MiB)  # large enough that moto's copy to the blob's place takes a while
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    path = f"/v2/some/repo/blobs/{digest}"
    with cutting_upstream(blob, cut_at=len(blob)) as (url, gets):
        proxy = {"remoteurl": url, "spooldirectory": str(tmp_path / "spool")}
        cache = RegistryProcess(tmp_path / "cache", kind="ours", storage=storage, extra_config={"proxy": proxy})
        cache.start()
        try:
            with httpx.Client(base_url=cache.url, timeout=60) as client:
                with client.stream("GET", path) as first:  # starts the fetch and reads the blob to its last byte
                    assert first.status_code == 200
                    assert sum(len(chunk) for chunk in first.iter_raw()) == len(blob)
                answers: list[int] = []
                deadline = time.monotonic() + 30
                while not answers or answers[-1] != 307:  # until served from S3: the fetch has ended
                    assert time.monotonic() < deadline, answers
                    with client.stream("GET", path) as answer:
                        answers.append(answer.status_code)
                        if answer.status_code == 307:
                            with client.stream("GET", answer.headers["Location"]) as stored:
                                answers.append(stored.status_code)
                                assert stored.status_code == 200, (answers, stored.read())
                            answers.append(307)
                    assert set(answers) <= {200, 307}, answers
                assert client.get(path, follow_redirects=True).content == blob
                assert gets[0] == 1
        finally:
            cache.stop()


def test_a_containerd_ns_pull_needs_the_right_to_pull_the_prefixed_repository(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    with client_for(upstream) as source:
        pushed = image_manifest(source, "library/guarded")
        push(source, "library/guarded", pushed, "1")
    users = {"raw": "raw-secret-1", "prefixed": "prefixed-secret-2"}
    rules = [
        # `raw` may pull the name containerd sends, not the cache's repository it is served from
        {"who": "raw", "repositories": ["library/*"], "actions": ["pull"]},
        {"who": "prefixed", "repositories": ["hub/*"], "actions": ["pull"]},
    ]
    config = {
        "proxy": {"upstreams": [{"prefix": "hub", "remoteurl": upstream.url}]},
        "auth": {"htpasswd": {"realm": "cache", "path": str(write_htpasswd(tmp_path / "htpasswd", users))}},
        "access": rules,
    }
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=config).start()
    path = "/v2/library/guarded/manifests/1"
    try:
        with httpx.Client(base_url=cache.url, timeout=60, auth=("raw", users["raw"])) as raw:
            denied = raw.get(path, params={"ns": upstream.host})
            assert_error(denied, 403, "DENIED")
            assert denied.json()["errors"][0]["detail"] == [
                {"Type": "repository", "Name": "hub/library/guarded", "Action": "pull"}
            ]
            assert_error(
                raw.get(f"/v2/library/guarded/blobs/{pushed.digest}", params={"ns": upstream.host}), 403, "DENIED"
            )
        with httpx.Client(base_url=cache.url, timeout=60) as anonymous:
            challenge = anonymous.get(path, params={"ns": upstream.host})
            assert challenge.status_code == 401
            assert challenge.json()["errors"][0]["detail"][0]["Name"] == "hub/library/guarded"
        time.sleep(0.5)
        assert upstream_requests(upstream, "HEAD", "library/guarded/manifests/1") == 0  # refused before asking upstream
        with httpx.Client(base_url=cache.url, timeout=60, auth=("prefixed", users["prefixed"])) as prefixed:
            allowed = prefixed.get(path, params={"ns": upstream.host}, headers={"Accept": OCI_MANIFEST})
            assert allowed.status_code == 200
            assert allowed.content == pushed.body
            assert prefixed.get("/v2/hub/library/guarded/tags/list").json()["tags"] == ["1"]
    finally:
        cache.stop()


def test_two_nodes_on_postgresql_share_the_ttl_clock_and_one_manifest_fetch(
    upstream: RegistryProcess, tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    repo = "nodes/app"
    with client_for(upstream) as source:
        pushed = image_manifest(source, repo)
        push(source, repo, pushed, "v1")
    storage, _ = on_s3(shared_server())
    config = {
        "proxy": {"remoteurl": upstream.url, "ttl": "1h"},
        "database": {"url": postgres_cluster.new_database()},
    }
    nodes = [
        RegistryProcess(tmp_path / f"node{n}", kind="ours", workers=WORKERS, storage=storage, extra_config=config)
        for n in range(2)
    ]
    clients: list[httpx.Client] = []
    try:
        for node in nodes:
            node.start()
            clients += clients_on_every_worker(node, 2)  # eight clients, two on each worker of each node
        answers = all_at_once(clients, lambda c: c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}))
        assert [(a.status_code, a.content) for a in answers] == [(200, pushed.body)] * 8
        for client in clients:  # and one after the other, within the ttl
            assert client.get(f"/v2/{repo}/manifests/v1").headers["Docker-Content-Digest"] == pushed.digest
        time.sleep(0.5)
        assert upstream_requests(upstream, "HEAD", f"{repo}/manifests/v1") == 1
        assert upstream_requests(upstream, "GET", f"{repo}/manifests/{pushed.digest}") == 1
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.stop()


def test_with_a_ttl_and_the_upstream_down_every_worker_serves_the_cached_tag(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("CNCF Distribution is not installed: apt-get install docker-registry")
    upstream = distribution(tmp_path / "upstream")
    cache = None
    clients: list[httpx.Client] = []
    try:
        with client_for(upstream) as source:
            pushed = image_manifest(source, "down/app")
            push(source, "down/app", pushed, "v1")
        cache = cache_on("filesystem", tmp_path / "cache", {"remoteurl": upstream.url, "ttl": "1s"})
        clients = clients_on_every_worker(cache, 4)
        assert clients[0].get("/v2/down/app/manifests/v1").status_code == 200
        upstream.stop()
        time.sleep(1.2)  # the ttl ran out: the tag is due for a revalidation the upstream cannot answer
        answers = all_at_once(clients, lambda c: c.get("/v2/down/app/manifests/v1"))
        assert {(a.status_code, a.headers.get("Docker-Content-Digest")) for a in answers} == {(200, pushed.digest)}
        assert "from the cache, upstream unavailable" in cache.log_path.read_text()
    finally:
        for client in clients:
            client.close()
        if cache is not None:
            cache.stop()
        upstream.stop()
