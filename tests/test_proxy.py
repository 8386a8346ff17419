"""The pull-through cache over HTTP, against real upstreams started here: CNCF Distribution 2.8 anonymous and with
htpasswd, our registry with its token service, and a fake upstream that dies mid-blob."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from certificates import self_signed
from notification_receiver import Receiver

from oci_content import DOCKER_LIST, DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from proxy_upstreams import (
    PASSWORD,
    PULL_LIMIT,
    USER,
    blob_gets,
    client_for,
    cutting_upstream,
    distribution,
    limiting_upstream,
    mirror,
    raw_server,
    redirecting_upstream,
    token_client,
    token_registry,
    upstream_requests,
)
from registry_api import Pushed, assert_error, canonical, image_manifest, index_manifest, push, push_blob, sha256
from registry_process import RegistryProcess, free_port
from s3_server import on_filesystem_only


def pull_all(client: httpx.Client, repo: str, reference: str) -> tuple[httpx.Response, dict[str, bytes]]:
    """What a client pulling `repo:reference` gets: the manifest and every blob it names."""
    manifest = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert manifest.status_code == 200, manifest.text
    document = json.loads(manifest.content)
    blobs = {}
    for descriptor in [document["config"], *document["layers"]]:
        answer = client.get(f"/v2/{repo}/blobs/{descriptor['digest']}")
        assert answer.status_code == 200, answer.text
        blobs[descriptor["digest"]] = answer.content
    return manifest, blobs


def cached_file(path: Path, timeout: float = 10.0) -> bytes:
    """A blob's file once the cache has published it: clients get the last byte as soon as it arrives, before the
    fetch has verified, fsynced and moved the blob into place."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_bytes()


def seed(upstream_client: httpx.Client, repo: str, tag: str) -> Pushed:
    manifest = image_manifest(upstream_client, repo, layers=2)
    push(upstream_client, repo, manifest, tag)
    return manifest


def test_mirror_pulls_byte_identical_then_serves_with_upstream_down_and_refuses_pushes(tmp_path: Path) -> None:
    upstream = distribution(tmp_path / "upstream")
    try:
        with client_for(upstream) as source:
            pushed = seed(source, "library/app", "v1")
            original, original_blobs = pull_all(source, "library/app", "v1")
        debug = f"127.0.0.1:{free_port()}"
        config = {
            "proxy": {"remoteurl": upstream.url},
            "http": {"debug": {"addr": debug, "prometheus": {"enabled": True}}},
        }
        cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=config).start()
        try:
            with httpx.Client(base_url=cache.url, timeout=60) as client:
                manifest, blobs = pull_all(client, "library/app", "v1")
                assert manifest.content == original.content == pushed.body
                assert manifest.headers["Docker-Content-Digest"] == pushed.digest
                assert blobs == original_blobs
                by_digest = client.get(f"/v2/library/app/manifests/{pushed.digest}")
                assert by_digest.content == pushed.body
                # cached content is ordinary content: catalog and tag list show it
                assert client.get("/v2/_catalog").json()["repositories"] == ["library/app"]
                assert client.get("/v2/library/app/tags/list").json()["tags"] == ["v1"]
                # pushes refused
                assert_error(client.post("/v2/library/app/blobs/uploads/"), 405, "UNSUPPORTED")
                put = client.put(
                    "/v2/library/app/manifests/v2", content=pushed.body, headers={"Content-Type": OCI_MANIFEST}
                )
                assert_error(put, 405, "UNSUPPORTED")
                assert_error(client.delete(f"/v2/library/app/manifests/{pushed.digest}"), 405, "UNSUPPORTED")
                # nor through the v1 API or the web UI (a v1 tag put replaced the cached image, a UI delete removed it)
                image_id = "a" * 64
                for method, path, body in (
                    ("PUT", "/v1/repositories/library/app/tags/v1", json.dumps(image_id).encode()),
                    ("DELETE", "/v1/repositories/library/app/tags/v1", b""),
                    ("PUT", "/v1/repositories/library/app/", b"[]"),
                    ("PUT", f"/v1/images/{image_id}/json", json.dumps({"id": image_id}).encode()),
                    ("POST", "/ui/repositories/library/app/-/delete", b"tag=v1"),
                ):
                    assert_error(client.request(method, path, content=body), 405, "UNSUPPORTED")
                # a docker 1.x login's sign-up step changes no name: answered as v1 answers it
                assert client.post("/v1/users/", json={"username": "u"}).status_code != 405
                assert client.get("/v2/library/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == (
                    pushed.body
                )

                with client_for(upstream) as source:
                    seed(source, "library/app", "v2")  # never pulled: listed while the upstream answers
                assert client.get("/v2/library/app/tags/list").json()["tags"] == ["v1", "v2"]

                upstream.stop()
                # upstream gone: by tag (stale), by digest, blobs, tag list still served
                again, again_blobs = pull_all(client, "library/app", "v1")
                assert again.content == pushed.body
                assert again_blobs == original_blobs
                assert client.get(f"/v2/library/app/manifests/{pushed.digest}").status_code == 200
                assert client.get("/v2/library/app/tags/list").json()["tags"] == ["v1"]
                # never pulled, upstream down: a clear 503, not a 500
                assert_error(client.get("/v2/library/other/manifests/v1"), 503, "UNAVAILABLE")
            assert "upstream unavailable" in cache.log_path.read_text()
            time.sleep(1.5)  # workers flush their metrics once a second
            metrics = httpx.get(f"http://{debug}/metrics").text
            assert 'registry_proxy_stale_served_total{served="tag"} 1.0' in metrics
            assert 'registry_proxy_stale_served_total{served="tags"} 1.0' in metrics
        finally:
            cache.stop()
    finally:
        upstream.stop()


def test_tag_moved_upstream_seen_after_ttl_and_digests_never_revalidated(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    cache = mirror(tmp_path / "cache", upstream.url, ttl="2s")
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            first = seed(source, "moving/app", "latest")
            assert client.get("/v2/moving/app/manifests/latest").headers["Docker-Content-Digest"] == first.digest
            second = seed(source, "moving/app", "latest")
            # within the ttl: the cached tag
            assert client.get("/v2/moving/app/manifests/latest").headers["Docker-Content-Digest"] == first.digest
            time.sleep(2.5)
            assert client.get("/v2/moving/app/manifests/latest").headers["Docker-Content-Digest"] == second.digest
            # the old manifest by digest stays served from the cache
            assert client.get(f"/v2/moving/app/manifests/{first.digest}").content == first.body
    finally:
        cache.stop()


def test_ttl_zero_checks_every_pull(upstream: RegistryProcess, tmp_path: Path) -> None:
    cache = mirror(tmp_path / "cache", upstream.url)
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            first = seed(source, "zero/app", "latest")
            assert client.get("/v2/zero/app/manifests/latest").headers["Docker-Content-Digest"] == first.digest
            second = seed(source, "zero/app", "latest")
            assert client.get("/v2/zero/app/manifests/latest").headers["Docker-Content-Digest"] == second.digest
            assert_error(client.get("/v2/zero/app/manifests/nosuchtag"), 404, "MANIFEST_UNKNOWN")
            assert_error(client.get("/v2/zero/app/blobs/sha256:" + "0" * 64), 404, "BLOB_UNKNOWN")
    finally:
        cache.stop()


def test_basic_and_token_upstreams(tmp_path: Path) -> None:
    basic = distribution(tmp_path / "basic", htpasswd=True)
    token = token_registry(tmp_path / "token")
    caches: list[RegistryProcess] = []
    try:
        with client_for(basic, (USER, PASSWORD)) as source:
            from_basic = seed(source, "team/basic", "v1")
        with token_client(token, "repository:team/token:pull,push") as source:
            from_token = seed(source, "team/token", "v1")
            seed(source, "team/token", "v2")
        upstreams = [
            {"prefix": "basic", "remoteurl": basic.url, "username": USER, "password": PASSWORD},
            {"prefix": "token", "remoteurl": token.url, "username": USER, "password": PASSWORD},
            {"prefix": "nocreds", "remoteurl": token.url},
        ]
        cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}})
        caches.append(cache.start())
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            manifest, _ = pull_all(client, "basic/team/basic", "v1")
            assert manifest.content == from_basic.body
            manifest, _ = pull_all(client, "token/team/token", "v1")
            assert manifest.content == from_token.body
            # one token for the scope, reused for the manifest and every blob until it expires
            token_requests = [line for line in token.log_path.read_text().splitlines() if "GET /auth/token" in line]
            assert len(token_requests) == 2  # the seeding client's, and the cache's
            # the upstream's pages, their `Link` under the local name
            page = client.get("/v2/token/team/token/tags/list", params={"n": 1})
            assert page.json() == {"name": "token/team/token", "tags": ["v1"]}
            assert page.headers["Link"] == '</v2/token/team/token/tags/list?n=1&last=v1>; rel="next"'
            # without credentials the token upstream refuses, and nothing is cached: 503
            assert_error(client.get("/v2/nocreds/team/token/manifests/v1"), 503, "UNAVAILABLE")
        log = cache.log_path.read_text()
        assert PASSWORD not in log
    finally:
        for process in (*caches, basic, token):
            process.stop()


@on_filesystem_only("reads the cache's SQLite database")
def test_prefixes_beside_local_repositories_and_containerd_ns(upstream: RegistryProcess, tmp_path: Path) -> None:
    host = upstream.host
    upstreams = [{"prefix": "hub", "remoteurl": upstream.url}]
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}}).start()
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            pushed = seed(source, "library/alpine", "3")
            manifest, _ = pull_all(client, "hub/library/alpine", "3")
            assert manifest.content == pushed.body
            # pushes under the prefix refused, local names pushable
            assert_error(client.post("/v2/hub/library/alpine/blobs/uploads/"), 405, "UNSUPPORTED")
            local = image_manifest(client, "team/local")
            push(client, "team/local", local, "v1")
            # through v1 too: refused under the prefix, taken for a local name
            refused = client.put("/v1/repositories/hub/library/alpine/tags/3", content=json.dumps("a" * 64))
            assert_error(refused, 405, "UNSUPPORTED")
            assert client.put("/v1/repositories/team/local/", content=b"[]").status_code == 200
            assert client.get("/v2/team/local/manifests/v1").content == local.body
            # containerd's mirror request: the upstream's name with ?ns=, stored under the prefix
            other = seed(source, "library/busybox", "1")
            answer = client.get(
                "/v2/library/busybox/manifests/1", params={"ns": host}, headers={"Accept": OCI_MANIFEST}
            )
            assert answer.status_code == 200
            assert answer.content == other.body
            assert client.get("/v2/hub/library/busybox/tags/list").json()["tags"] == ["1"]
            # tag lists come from the upstream while it answers, tags never pulled included, under the local name
            seed(source, "library/alpine", "edge")
            listed = client.get("/v2/hub/library/alpine/tags/list").json()
            assert listed == {"name": "hub/library/alpine", "tags": ["3", "edge"]}
            assert sorted(client.get("/v2/_catalog").json()["repositories"]) == [
                "hub/library/alpine",
                "hub/library/busybox",
                "team/local",
            ]
            # a name outside every prefix is local: unknown here, never asked upstream
            assert_error(client.get("/v2/library/alpine/manifests/3"), 404, "NAME_UNKNOWN")
    finally:
        cache.stop()
    # what garbage collection will read: when each cached manifest and blob was last pulled (local content not)
    with sqlite3.connect(cache.data_dir / "registry.db") as db:
        rows = db.execute(
            "SELECT r.name, p.digest, p.kind FROM proxy_pulls p JOIN repositories r ON r.id = p.repository_id"
        ).fetchall()
    document = json.loads(pushed.body)
    expected = {("hub/library/alpine", pushed.digest, "manifest"), ("hub/library/busybox", other.digest, "manifest")}
    expected |= {("hub/library/alpine", d["digest"], "blob") for d in [document["config"], *document["layers"]]}
    assert set(rows) == expected


def test_a_v1_short_name_under_a_library_prefix_is_refused_as_its_full_name(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """v1 writes a one-part name as `library/<name>`: with a prefix `library`, `PUT /v1/repositories/alpine/...` went
    through the refusal, which read the name as the path gave it (a review found it)."""
    upstreams = [{"prefix": "library", "remoteurl": upstream.url}]
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}}).start()
    try:
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            refused = client.put("/v1/repositories/alpine/tags/latest", content=json.dumps("a" * 64))
            assert_error(refused, 405, "UNSUPPORTED")
            assert_error(client.put("/v1/repositories/alpine/", content=b"[]"), 405, "UNSUPPORTED")
            assert client.put("/v1/repositories/team/local/", content=b"[]").status_code == 200
    finally:
        cache.stop()


def test_an_official_image_asked_of_docker_hub_by_its_short_name_is_pulled_as_library(tmp_path: Path) -> None:
    """`docker pull cache/hub/alpine` names `alpine`, which Docker Hub only knows as `library/alpine` (the Docker CLI
    adds `library/` for Docker Hub itself): the cache asks for `library/alpine` and stores it under the name pulled.
    Docker Hub is reached here through an HTTP proxy (the environment's `HTTP_PROXY`, as the cache honours it), which
    is this test's fake Docker Hub: it sees the name asked for in each request line."""
    config = {"mediaType": OCI_EMPTY, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}
    document = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}).encode()
    seen: list[str] = []

    def docker_hub(conn: socket.socket, head: str) -> None:
        line = head.split("\r\n", 1)[0]
        seen.append(line)
        if "/v2/library/" in line and "/manifests/" in line:
            answer = f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {len(document)}\r\n\r\n"
            conn.sendall(answer.encode() + (document if line.startswith("GET") else b""))
        else:  # what Docker Hub answers for a repository that is not there (or not ours to see)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with raw_server(docker_hub) as proxy_url:
        upstreams = [{"prefix": "hub", "remoteurl": "http://registry-1.docker.io"}]
        cache = RegistryProcess(
            tmp_path / "cache",
            kind="ours",
            extra_config={"proxy": {"upstreams": upstreams}},
            env={"HTTP_PROXY": proxy_url, "http_proxy": proxy_url, "NO_PROXY": "", "no_proxy": ""},
        ).start()
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                for name in ("hub/alpine", "hub/library/alpine"):
                    answer = client.get(f"/v2/{name}/manifests/3.20", headers={"Accept": OCI_MANIFEST})
                    assert answer.status_code == 200, answer.text
                    assert answer.content == document
                assert_error(client.get("/v2/hub/someone/alpine/manifests/3.20"), 404, "MANIFEST_UNKNOWN")
                assert client.get("/v2/_catalog").json()["repositories"] == ["hub/alpine", "hub/library/alpine"]
        finally:
            cache.stop()
    asked = {line.split()[1] for line in seen if "/manifests/" in line}
    assert asked == {
        "http://registry-1.docker.io/v2/library/alpine/manifests/3.20",
        "http://registry-1.docker.io/v2/someone/alpine/manifests/3.20",
    }


def test_a_blob_stored_for_another_repository_is_served_only_where_the_upstream_has_it(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """Blobs are stored once, whatever repository they came from, but a repository serves only its own: through a
    proxied name, a blob stored for another repository (cached, or pushed to a local one) is served when a manifest
    cached under that name names it, or when the upstream has it in that repository, and not otherwise. Anyone
    allowed to pull some proxied name could read every blob of the registry by digest, and each such request
    added the name to the catalog."""
    upstreams = [{"prefix": "hub", "remoteurl": upstream.url}]
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}}).start()
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            shared = seed(source, "library/base", "1")
            layer = json.loads(shared.body)["layers"][0]["digest"]
            _, blobs_of_base = pull_all(client, "hub/library/base", "1")
            private = image_manifest(client, "team/private")
            push(client, "team/private", private, "secret")  # a local repository beside the cache
            secret = json.loads(private.body)["layers"][0]["digest"]
            for name in ("hub/library/nothing", "hub/anyone/else"):
                for digest in (layer, secret):
                    assert_error(client.get(f"/v2/{name}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
                    assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 404
            assert sorted(client.get("/v2/_catalog").json()["repositories"]) == ["hub/library/base", "team/private"]
            # the same layer in other images of the upstream: served from what is stored, never fetched again
            for name in ("library/derived", "library/third"):
                mounted = source.post(f"/v2/{name}/blobs/uploads/", params={"mount": layer, "from": "library/base"})
                assert mounted.status_code == 201
                image = image_manifest(source, name, layers=1)
                document = {**json.loads(image.body), "layers": json.loads(shared.body)["layers"][:1]}
                body = canonical(document)
                push(source, name, Pushed(body, OCI_MANIFEST, sha256(body)), "1")
            # by digest alone: the upstream says it has it there
            assert client.get(f"/v2/hub/library/derived/blobs/{layer}").content == blobs_of_base[layer]
            # as a pull goes, the manifest first: it names the layer, and the upstream is not asked
            assert pull_all(client, "hub/library/third", "1")[1][layer] == blobs_of_base[layer]
            assert upstream_requests(upstream, "HEAD", f"library/third/blobs/{layer}") == 0
            assert blob_gets(upstream, layer) == 1
    finally:
        cache.stop()


COLLECTED_MEANWHILE_LAUNCHER = """
import os, sys, threading, time
from docker_registry.server.store.blobs import BlobQueries

raced, blob_file = os.environ["RACED_DIGEST"], os.environ["RACED_FILE"]
look = BlobQueries.blob_sizes


def collected_meanwhile(self, repository, digest, cache):
    answer = look(self, repository, digest, cache)
    if str(digest) == raced and answer[1] is not None:  # stored, not linked here: a collection strikes now
        with self.engine.begin() as conn:  # the cache's other link expired, the blob marked as being deleted
            conn.exec_driver_sql("DELETE FROM repository_blobs WHERE digest = ?", (raced,))
            conn.exec_driver_sql("UPDATE blobs SET deleting_since = ? WHERE digest = ?", (time.time(), raced))

        def finish():  # as the collector does: the file, then the row
            time.sleep(0.5)
            os.remove(blob_file)
            with self.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM blobs WHERE digest = ?", (raced,))

        threading.Thread(target=finish).start()
    return answer


BlobQueries.blob_sizes = collected_meanwhile
from docker_registry.server.cli import main

sys.exit(main(["serve", sys.argv[1]]))
"""
"""A cache server in whose process a garbage collection deletes one blob (`RACED_DIGEST`, stored at `RACED_FILE`)
between the cache's look at it and its link into the name asked for."""


@dataclass
class CollectedMeanwhile(RegistryProcess):
    def command(self, config_path: Path) -> list[str]:
        return [sys.executable, "-c", COLLECTED_MEANWHILE_LAUNCHER, str(config_path)]


@on_filesystem_only("removes a blob file of the cache's, as garbage collection does")
def test_a_stored_blob_collected_before_this_names_link_is_fetched_again(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """A blob stored for another name of the cache, found by a GET through a second name, and deleted by garbage
    collection before the second name's link (which the collection's mark refuses): the blob is fetched from the
    upstream again, and served. It was a 503 (a client retried into the same race, or gave up)."""
    upstreams = [{"prefix": "hub", "remoteurl": upstream.url}]
    with client_for(upstream) as source:
        image = seed(source, "library/first", "1")
        layer = json.loads(image.body)["layers"][0]["digest"]
        mounted = source.post("/v2/library/second/blobs/uploads/", params={"mount": layer, "from": "library/first"})
        assert mounted.status_code == 201
    cache = CollectedMeanwhile(
        tmp_path / "cache", workers=1, extra_config={"proxy": {"upstreams": upstreams}}, kind="ours"
    )
    algorithm, encoded = layer.split(":")
    cache.env = {
        "RACED_DIGEST": layer,
        "RACED_FILE": str(cache.data_dir / f"blobs/{algorithm}/{encoded[:2]}/{encoded}/data"),
    }
    cache.start()
    try:
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            _, blobs_of_first = pull_all(client, "hub/library/first", "1")
            answer = client.get(f"/v2/hub/library/second/blobs/{layer}")
            assert answer.status_code == 200, answer.text
            assert answer.content == blobs_of_first[layer]
            assert blob_gets(upstream, layer) == 2  # fetched again: what was stored went with the collection
            assert client.get(f"/v2/hub/library/second/blobs/{layer}").content == blobs_of_first[layer]
            assert blob_gets(upstream, layer) == 2  # linked and stored now
    finally:
        cache.stop()


def test_an_upstream_manifest_naming_a_local_repositorys_blob_does_not_open_it(tmp_path: Path) -> None:
    """A manifest is only the upstream's claim. One naming the digest of a blob pushed to a local repository, which
    the upstream does not have, made the cache link and serve the local bytes under the cached name without asking
    the upstream: anyone allowed to pull through the cache read a private blob whose digest an upstream knew. The
    UI showed the private config under the cached name once a page of the private image had been seen (one worker:
    its cache of configs)."""
    with cutting_upstream(b"", cut_at=0, only="nowhere", manifest=lambda: served[0]) as (url, gets):
        upstreams = [{"prefix": "up", "remoteurl": url}]
        cache = RegistryProcess(
            tmp_path / "cache", kind="ours", workers=1, extra_config={"proxy": {"upstreams": upstreams}}
        )
        cache.start()
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                config = canonical({"architecture": "amd64", "os": "linux", "config": {"Env": ["TOKEN=hush-0451"]}})
                private = image_manifest(client, "team/private", config=config)
                push(client, "team/private", private, "secret")
                assert "hush-0451" in client.get("/ui/repositories/team/private/-/manifests/secret").text
                secret = json.loads(private.body)["layers"][0]["digest"]
                served = [private.body]  # the upstream's manifest names the local layer, which it does not have
                answer = client.get("/v2/up/evil/manifests/latest", headers={"Accept": OCI_MANIFEST})
                assert answer.status_code == 200
                assert_error(client.get(f"/v2/up/evil/blobs/{secret}"), 404, "BLOB_UNKNOWN")
                assert client.head(f"/v2/up/evil/blobs/{secret}").status_code == 404
                assert gets == [0]
                page = client.get("/ui/repositories/up/evil/-/manifests/latest")
                assert page.status_code == 200
                assert "hush-0451" not in page.text
        finally:
            cache.stop()


def test_referrers_come_from_the_upstream_or_say_it_has_no_referrers_api(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """Signatures and SBOMs are found through the referrers API: through the cache, the upstream's answer (one
    pushed after the image was cached shows at once, the `artifactType` filter applies); a 404 where the upstream
    has no referrers API (Distribution 2.8), so that clients look for the referrers tag, which the cache serves;
    the cached referrers while the upstream is down. An empty index would tell clients there is nothing."""
    ours = RegistryProcess(tmp_path / "ours-upstream", kind="ours").start()
    upstreams = [{"prefix": "ours", "remoteurl": ours.url}, {"prefix": "dist", "remoteurl": upstream.url}]
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}}).start()
    try:
        with (
            httpx.Client(base_url=ours.url, timeout=60) as source,
            httpx.Client(base_url=cache.url, timeout=60) as client,
        ):
            image = seed(source, "team/app", "1")
            pull_all(client, "ours/team/app", "1")
            signature = image_manifest(
                source, "team/app", artifact_type="application/vnd.example.signature", subject=image
            )
            push(source, "team/app", signature)  # after the image was cached
            sbom = image_manifest(source, "team/app", artifact_type="application/vnd.example.sbom", subject=image)
            push(source, "team/app", sbom)
            listed = client.get(f"/v2/ours/team/app/referrers/{image.digest}")
            assert listed.status_code == 200
            assert listed.headers["Content-Type"] == OCI_INDEX
            assert {m["digest"] for m in listed.json()["manifests"]} == {signature.digest, sbom.digest}
            only = client.get(
                f"/v2/ours/team/app/referrers/{image.digest}", params={"artifactType": "application/vnd.example.sbom"}
            )
            assert [m["digest"] for m in only.json()["manifests"]] == [sbom.digest]
            assert only.headers["OCI-Filters-Applied"] == "artifactType"
            notes_type = "application/vnd.example.notes+json"  # a `+`, sent as the spec's example writes a filter
            large = {"org.example.notes": "n" * 700_000}  # two of them fill more than the upstream's page
            notes = [image_manifest(source, "team/app", artifact_type=notes_type, subject=image, annotations=large)]
            notes.append(image_manifest(source, "team/app", artifact_type=notes_type, subject=image, annotations=large))
            for note in notes:
                push(source, "team/app", note)
            first = client.get(f"/v2/ours/team/app/referrers/{image.digest}?artifactType={notes_type}")
            link = first.headers["Link"]
            assert link.startswith(f"</v2/ours/team/app/referrers/{image.digest}?"), link  # the page, through us
            second = client.get(link[1 : link.index(">")])
            assert "Link" not in second.headers
            paged = [m["digest"] for page in (first, second) for m in page.json()["manifests"]]
            assert sorted(paged) == sorted(note.digest for note in notes)
            pull_all(client, "ours/team/app", signature.digest)  # cached, as a client verifying it would
            ours.stop()
            cached = client.get(f"/v2/ours/team/app/referrers/{image.digest}")
            assert [m["digest"] for m in cached.json()["manifests"]] == [signature.digest]
            assert "serving the cached referrers" in cache.log_path.read_text()
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            image = seed(source, "team/app", "1")
            answer = client.get(f"/v2/dist/team/app/referrers/{image.digest}")
            assert_error(answer, 404, "NOT_FOUND")
    finally:
        cache.stop()
        ours.stop()


def test_index_caches_the_index_and_the_platform_pulled(upstream: RegistryProcess, tmp_path: Path) -> None:
    cache = mirror(tmp_path / "cache", upstream.url)
    try:
        with client_for(upstream) as source, httpx.Client(base_url=cache.url, timeout=60) as client:
            children = [image_manifest(source, "multi/app") for _ in range(2)]
            for child in children:
                push(source, "multi/app", child)
            index = index_manifest(children)
            push(source, "multi/app", index, "v1")
            assert client.get("/v2/multi/app/manifests/v1", headers={"Accept": index.media_type}).content == index.body
            assert client.get(f"/v2/multi/app/manifests/{children[0].digest}").content == children[0].body
            upstream.stop()
            # the index and the platform pulled are cached; the other platform was never asked for
            assert client.get("/v2/multi/app/manifests/v1", headers={"Accept": index.media_type}).content == index.body
            assert client.get(f"/v2/multi/app/manifests/{children[0].digest}").status_code == 200
            assert_error(client.get(f"/v2/multi/app/manifests/{children[1].digest}"), 503, "UNAVAILABLE")
    finally:
        upstream.start()
        cache.stop()


def test_a_docker_list_by_tag_gives_a_client_without_lists_its_linux_amd64_image(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """As Distribution (and its proxy) serve it: the list's linux/amd64 image in its place, to a client whose Accept
    names no list. The cache held only the list, so such a pull was a 404 until another client had pulled that image
    by digest."""
    with client_for(upstream) as source:
        children = [image_manifest(source, "multi/dlist", media_type=DOCKER_MANIFEST) for _ in range(2)]
        for child in children:
            push(source, "multi/dlist", child)
        push(source, "multi/dlist", index_manifest(children, DOCKER_LIST), "v1")
    cache = mirror(tmp_path / "cache", upstream.url)
    try:
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            answer = client.get("/v2/multi/dlist/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
            assert answer.status_code == 200, answer.text
            assert answer.content == children[0].body  # index_manifest gives the first child linux/amd64
            assert answer.headers["Docker-Content-Digest"] == children[0].digest
    finally:
        cache.stop()


def test_concurrent_gets_of_an_uncached_blob_cause_one_upstream_get(upstream: RegistryProcess, tmp_path: Path) -> None:
    blob = os.urandom(16 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with client_for(upstream) as source:
        push_blob(source, "big/blob", blob)
    cache = mirror(tmp_path / "cache", upstream.url)  # two workers: requests land on both
    results: list[bytes] = []
    errors: list[BaseException] = []

    def get() -> None:
        try:
            with httpx.Client(base_url=cache.url, timeout=120) as client:
                answer = client.get(f"/v2/big/blob/blobs/{digest}")
                assert answer.status_code == 200, answer.text
                results.append(answer.content)
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(results) == 8
        assert all(hashlib.sha256(r).hexdigest() == digest.split(":")[1] for r in results)
        time.sleep(0.5)  # Distribution writes its log line after the response
        assert blob_gets(upstream, digest) == 1
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            assert client.get(f"/v2/big/blob/blobs/{digest}").content == blob
        assert blob_gets(upstream, digest) == 1
    finally:
        cache.stop()


@on_filesystem_only("reads the cache's blob files (on S3: tests/test_proxy_shared.py)")
def test_a_new_base_layer_pulled_through_many_repositories_at_once_is_served_to_each(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    """Six images sharing a base layer, pulled at once (a probe: skopeo pulls failed 3 in 72 with 404; raw GETs 11
    to 26 in 180). One repository's fetch stored the blob while another's request waited on it; that request then
    served it from its own repository, where only the other one had linked it."""
    repositories = [f"shared/app{n}" for n in range(6)]
    blobs = [os.urandom(200_000) for _ in range(16)]
    with client_for(upstream) as source:
        for blob in blobs:
            for repository in repositories:
                push_blob(source, repository, blob)
    cache = mirror(tmp_path / "cache", upstream.url)  # two workers: requests land on both

    def get(job: tuple[str, bytes]) -> tuple[int, bool]:
        repository, blob = job
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            answer = client.get(f"/v2/{repository}/blobs/{sha256(blob)}")
            return answer.status_code, answer.content == blob

    try:
        with ThreadPoolExecutor(len(repositories)) as pool:
            for blob in blobs:
                outcomes = list(pool.map(get, [(repository, blob) for repository in repositories]))
                assert outcomes == [(200, True)] * len(repositories), outcomes
    finally:
        cache.stop()


def test_upstream_dying_mid_blob_keeps_nothing_and_the_next_get_fetches_it_whole(tmp_path: Path) -> None:
    blob = os.urandom(4 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with cutting_upstream(blob, cut_at=1024 * 1024) as (url, gets):
        cache = mirror(tmp_path / "cache", url)
        try:
            with httpx.Client(base_url=cache.url, timeout=60) as client:
                # the client streams the first MiB as it arrives; when the upstream dies its download is cut short
                # (or, on a machine so loaded that the client had not started yet, it gets a 503)
                received = 0
                try:
                    with client.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                        if answer.status_code == 200:
                            for chunk in answer.iter_raw():
                                received += len(chunk)
                        else:
                            answer.read()
                            assert_error(answer, 503, "UNAVAILABLE")
                except httpx.RemoteProtocolError:
                    assert 0 < received < len(blob)
                else:
                    assert received == 0
                blob_file = cache.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
                assert not blob_file.exists()
                assert not list((cache.data_dir / "uploads").glob("*/data"))
                answer = client.get(f"/v2/some/repo/blobs/{digest}")
                assert answer.status_code == 200
                assert answer.content == blob
                assert gets[0] == 2
                assert cached_file(blob_file) == blob
        finally:
            cache.stop()


def test_an_upstream_sending_other_bytes_than_the_digest_never_completes_a_download(tmp_path: Path) -> None:
    """The bytes stream to the client as they arrive, but the last one only once the fetch's digest matched: a client
    that does not check digests itself (curl, a script) gets a download cut short, never wrong bytes that look
    whole. The first GET of each attempt leads the fetch; the second follows it, as a pull of the same layer by
    another client would."""
    blob = os.urandom(2 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    wrong = blob[:-100] + bytes(b ^ 0xFF for b in blob[-100:])  # the same size: only the digest can tell
    with cutting_upstream(wrong, cut_at=len(wrong)) as (url, gets):
        cache = mirror(tmp_path / "cache", url)
        try:
            for _ in range(2):  # the second attempt fetches again: nothing was kept
                with ThreadPoolExecutor(2) as pool:
                    outcomes = list(pool.map(lambda _: _download(cache, digest), range(2)))
                for status, received, cut in outcomes:  # a 502 or 503 when the fetch failed before it was served
                    assert status in (502, 503) or (status == 200 and cut and received < len(blob)), outcomes
            blob_file = cache.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
            assert not blob_file.exists()
            assert gets[0] >= 2  # nothing was kept: the second attempt asked the upstream again
            assert "cut a download of " + digest in cache.log_path.read_text()
        finally:
            cache.stop()


def test_a_blob_sent_without_a_length_streams_whole_when_it_is_the_digests_and_cut_when_it_is_not(
    tmp_path: Path,
) -> None:
    """An upstream that announces no length (chunked transfer encoding): the cache streams the blob chunked as it
    arrives, and ends the stream properly only once the fetch verified and stored it."""
    blob = os.urandom(3 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with cutting_upstream(blob, cut_at=len(blob), pieces=6, pause=0.05, chunked=True) as (url, gets):
        cache = mirror(tmp_path / "honest", url)
        try:
            assert _download(cache, digest) == (200, len(blob), False)
            blob_file = cache.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
            assert cached_file(blob_file) == blob
            assert gets[0] == 1
        finally:
            cache.stop()
    wrong = blob[:-1] + bytes([blob[-1] ^ 1])
    with cutting_upstream(wrong, cut_at=len(wrong), pieces=6, pause=0.05, chunked=True) as (url, gets):
        cache = mirror(tmp_path / "lying", url)
        try:
            status, received, cut = _download(cache, digest)
            assert status in (502, 503) or (status == 200 and cut), (status, received, cut)
            assert not list((cache.data_dir / "blobs").rglob("data"))
        finally:
            cache.stop()


def test_a_manifest_the_upstream_sends_wrong_is_a_bad_gateway_not_the_clients_error(tmp_path: Path) -> None:
    """A manifest whose bytes are not the digest asked for, or no manifest at all, is refused and nothing is cached,
    with a 502 (the upstream's fault) rather than the 400 a push of it would get; a good one by tag still pulls, and
    once cached is served while the upstream answers its tag with something that is no manifest (an error page)."""
    config = {"mediaType": OCI_EMPTY, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}
    document = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []})
    other = "sha256:" + hashlib.sha256(document.encode() + b" ").hexdigest()
    accept = {"Accept": OCI_MANIFEST}
    served = [document.encode()]
    with cutting_upstream(b"", cut_at=0, manifest=lambda: served[-1]) as (url, _):
        cache = mirror(tmp_path / "lying", url)
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                answer = client.get(f"/v2/some/repo/manifests/{other}", headers=accept)
                assert_error(answer, 502, "UNAVAILABLE")
                assert "manifest digest mismatch" in answer.json()["errors"][0]["message"]
                assert client.head(f"/v2/some/repo/manifests/{other}", headers=accept).status_code == 502
                good = client.get("/v2/some/repo/manifests/v1", headers=accept)
                assert good.status_code == 200
                assert good.content == document.encode()
                served.append(b"<html>upstream error page</html>")
                stale = client.get("/v2/some/repo/manifests/v1", headers=accept)
                assert stale.status_code == 200
                assert stale.content == document.encode()
                assert "serving some/repo:v1 from the cache" in cache.log_path.read_text()
        finally:
            cache.stop()
    huge = b'{"schemaVersion": 2, "x": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    for name, body in (("garbage", b"<html>not a manifest</html>"), ("huge", huge)):
        # a manifest over 4 MiB is no passing failure either: a 502, not the 503 that invites retries
        with cutting_upstream(b"", cut_at=0, manifest=lambda body=body: body) as (url, _):
            cache = mirror(tmp_path / name, url)
            try:
                with httpx.Client(base_url=cache.url, timeout=30) as client:
                    assert_error(client.get("/v2/some/repo/manifests/v1", headers=accept), 502, "UNAVAILABLE")
                    assert client.get("/v2/_catalog").json()["repositories"] == []
            finally:
                cache.stop()


def test_an_upstream_limiting_our_pulls_is_left_alone_while_clients_learn_why_and_when_to_come_back(
    tmp_path: Path,
) -> None:
    """Docker Hub answers 429 to the manifest GETs past its pull limit (not to HEADs): a tag that is cached is still
    served; what is not cached is 429 TOOMANYREQUESTS with the upstream's reason and the time left, not a 503; and
    the upstream is asked nothing more (the count would only grow) until its `Retry-After` has passed."""
    config = {"mediaType": OCI_EMPTY, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}
    document = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}).encode()
    blob = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    accept = {"Accept": OCI_MANIFEST}
    limited: dict[str, str | None] = {}
    with limiting_upstream(document, blob, limited) as (url, seen):
        # one worker: each worker leaves the upstream alone once it has met a 429 itself
        extra = {"proxy": {"remoteurl": url, "ttl": "0s"}}
        cache = RegistryProcess(tmp_path / "cache", kind="ours", workers=1, extra_config=extra).start()
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                assert client.get("/v2/library/alpine/manifests/3", headers=accept).content == document
                limited["GET"] = "3"
                del seen[:]
                stale = client.get("/v2/library/alpine/manifests/3", headers=accept)  # asks: HEAD ok, GET 429
                assert stale.status_code == 200
                assert stale.content == document
                assert seen == [
                    "HEAD /v2/library/alpine/manifests/3 HTTP/1.1",
                    "GET /v2/library/alpine/manifests/3 HTTP/1.1",
                ]
                for path in (
                    "/v2/library/alpine/manifests/3",
                    "/v2/library/debian/manifests/12",
                    f"/v2/library/alpine/blobs/{digest}",
                ):
                    for method in ("GET", "HEAD"):
                        answer = client.request(method, path, headers=accept)
                        if path.endswith("/3"):
                            assert answer.status_code == 200
                            continue
                        assert answer.status_code == 429, (method, path, answer.text)
                        assert 1 <= int(answer.headers["Retry-After"]) <= 3
                        if method == "GET":
                            assert_error(answer, 429, "TOOMANYREQUESTS")
                            assert PULL_LIMIT in answer.json()["errors"][0]["message"]
                assert client.get("/v2/library/alpine/tags/list").json()["tags"] == ["3"]  # the cached tags
                assert_error(client.get("/v2/library/debian/tags/list"), 429, "TOOMANYREQUESTS")  # none cached
                assert len(seen) == 2  # nothing more asked of the upstream meanwhile
                log = cache.log_path.read_text()
                assert "answered 429 (You have reached your pull rate limit" in log
                assert "asking it nothing for 3 s" in log
                del limited["GET"]
                time.sleep(3.2)
                assert client.get("/v2/library/debian/manifests/12", headers=accept).content == document
                assert client.get(f"/v2/library/alpine/blobs/{digest}").content == blob
                limited["HEAD"] = limited["GET"] = None  # a 429 with no Retry-After: left alone for a while anyway
                del seen[:]
                assert_error(client.get("/v2/library/ubuntu/manifests/24.04", headers=accept), 429, "TOOMANYREQUESTS")
                assert client.get("/v2/library/debian/manifests/12", headers=accept).content == document
                assert seen == ["HEAD /v2/library/ubuntu/manifests/24.04 HTTP/1.1"]
        finally:
            cache.stop()


def test_a_manifest_and_a_tag_list_arriving_in_pieces_are_read_whole(tmp_path: Path) -> None:
    """Over the internet a large manifest or tag list comes in several reads (TCP segments, TLS records): all of it
    is read, not what the first read gave."""
    config = {"mediaType": OCI_EMPTY, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}
    annotations = {f"note.{i}": "x" * 40 for i in range(1000)}  # some 50 KB
    document = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [], "annotations": annotations}
    ).encode()
    digest = "sha256:" + hashlib.sha256(document).hexdigest()
    tags = tuple(f"v{i:05d}" for i in range(3000))
    with cutting_upstream(b"", cut_at=0, pieces=3, pause=0.2, manifest=lambda: document, tags=tags) as (url, _):
        cache = mirror(tmp_path / "cache", url)
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                answer = client.get(f"/v2/some/repo/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
                assert answer.status_code == 200, answer.text
                assert answer.content == document
                listed = client.get("/v2/some/repo/tags/list")
                assert listed.status_code == 200
                assert listed.json() == {"name": "some/repo", "tags": list(tags)}
            assert "serving the cached tags" not in cache.log_path.read_text()
        finally:
            cache.stop()


def test_a_blob_the_upstream_redirects_to_its_storage_is_fetched_without_our_credentials(tmp_path: Path) -> None:
    """Docker Hub and registries on S3 answer a blob GET with a 307 to a signed URL of another origin: the cache
    follows it without the upstream's credentials (they are not the storage's, and a signed URL takes no other), and
    stores the blob."""
    blob = os.urandom(1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with redirecting_upstream(blob) as (url, seen):
        cache = mirror(tmp_path / "cache", url, username="mirror", password="s3cret")
        try:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                for _ in range(2):  # fetched, then served from the cache
                    answer = client.get(f"/v2/some/repo/blobs/{digest}")
                    assert answer.status_code == 200, answer.text
                    assert answer.content == blob
        finally:
            cache.stop()
    storage = [entry for entry in seen if entry[0] == "storage"]
    assert storage == [("storage", "GET /signed/blob?signature=abc HTTP/1.1", False)]
    assert ("upstream", f"GET /v2/some/repo/blobs/{digest} HTTP/1.1", True) in seen


def _download(cache: RegistryProcess, digest: str) -> tuple[int, int, bool]:
    """GET a blob through the cache: the status, the bytes of the body received, and whether it was cut short."""
    received, status = 0, 0
    with httpx.Client(base_url=cache.url, timeout=60) as client:
        try:
            with client.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                status = answer.status_code
                for chunk in answer.iter_raw():
                    received += len(chunk)
        except httpx.RemoteProtocolError:
            return status, received, True
    return status, received, False


def test_storage_without_a_local_disk_streams_one_fetch_through_the_spool(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    blob = os.urandom(4 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with client_for(upstream) as source:
        push_blob(source, "memory/blob", blob)
    cache = RegistryProcess(
        tmp_path / "cache",
        kind="ours",
        workers=1,
        storage={"inmemory": {}},
        extra_config={"proxy": {"remoteurl": upstream.url}},
    ).start()
    answers: list[httpx.Response] = []

    def get() -> None:
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            answers.append(client.get(f"/v2/memory/blob/blobs/{digest}"))

    try:
        threads = [threading.Thread(target=get) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [(a.status_code, a.content == blob) for a in answers] == [(200, True)] * 4
        time.sleep(0.5)
        assert blob_gets(upstream, digest) == 1
        with httpx.Client(base_url=cache.url, timeout=60) as client:
            assert_error(client.get("/v2/memory/blob/blobs/sha256:" + "1" * 64), 404, "BLOB_UNKNOWN")
    finally:
        cache.stop()


@on_filesystem_only("reads the cache's blob files")
def test_a_client_that_disconnects_does_not_abort_the_fetch_others_wait_on(tmp_path: Path) -> None:
    blob = os.urandom(8 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    # the upstream sends the blob in 8 pieces over about 2 s
    with cutting_upstream(blob, cut_at=len(blob), pieces=8, pause=0.25) as (url, gets):
        cache = mirror(tmp_path / "cache", url)
        try:
            with (
                httpx.Client(base_url=cache.url, timeout=60) as first,
                httpx.Client(base_url=cache.url, timeout=60) as second,
            ):
                with first.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                    assert answer.status_code == 200
                    assert next(answer.iter_raw())  # the first bytes arrive while the upstream still sends
                first.close()  # the first client goes away mid-blob
                answer = second.get(f"/v2/some/repo/blobs/{digest}")
                assert answer.status_code == 200
                assert answer.content == blob
            assert gets[0] == 1
            blob_file = cache.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
            assert cached_file(blob_file) == blob
        finally:
            cache.stop()


def refused_during_a_fetch(
    first: httpx.Client, fetched: str, other: httpx.Client, refused: str, release: threading.Event
) -> bytes:
    """GET `fetched` (a cold blob whose upstream holds it after its first piece until `release`), and while that
    fetch is under way, GET `refused`: it must be BLOB_UNKNOWN. The bytes the first client received in all."""
    with first.stream("GET", fetched) as answer:
        assert answer.status_code == 200
        chunks = answer.iter_raw()
        received = next(chunks)  # the fetch is under way, held after its first piece
        assert_error(other.get(refused), 404, "BLOB_UNKNOWN")
        release.set()
        return received + b"".join(chunks)


def test_a_fetch_under_way_is_joined_only_by_names_whose_upstream_has_the_blob(tmp_path: Path) -> None:
    """A cold blob's fetch is shared by every request for its digest; but one for another repository, which its
    upstream does not hold, must not stream it (it would read by digest what its name may not serve)."""
    blob = os.urandom(4 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    release = threading.Event()
    with cutting_upstream(blob, cut_at=len(blob), pieces=4, release=release, only="lib/a") as (url, gets):
        cache = mirror(tmp_path / "cache", url)
        try:
            with (
                httpx.Client(base_url=cache.url, timeout=60) as first,
                httpx.Client(base_url=cache.url, timeout=10) as other,
            ):
                fetched, refused = f"/v2/lib/a/blobs/{digest}", f"/v2/lib/b/blobs/{digest}"
                assert refused_during_a_fetch(first, fetched, other, refused, release) == blob
            assert gets[0] == 1
        finally:
            release.set()
            cache.stop()


def test_a_fetch_for_another_upstream_is_not_joined_on_a_manifests_word(tmp_path: Path) -> None:
    """Fetches are shared by digest. With two upstreams, a manifest of one naming a blob that the other is being
    asked for let its name join that fetch without asking its own upstream: the second upstream's bytes were read
    through the first one's name (the claim of a manifest counts only within its own upstream)."""
    blob = os.urandom(2 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    config = b"{}"
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(blob)}],
    }
    claim = canonical(document)
    release = threading.Event()
    with (
        cutting_upstream(blob, cut_at=len(blob), pieces=4, release=release, only="lib/a") as (private_url, _),
        cutting_upstream(b"", cut_at=0, only="nowhere", manifest=lambda: claim) as (public_url, public_gets),
    ):
        upstreams = [{"prefix": "priv", "remoteurl": private_url}, {"prefix": "pub", "remoteurl": public_url}]
        cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config={"proxy": {"upstreams": upstreams}})
        cache.start()
        try:
            with (
                httpx.Client(base_url=cache.url, timeout=60) as first,
                httpx.Client(base_url=cache.url, timeout=10) as other,
            ):
                named = other.get("/v2/pub/evil/manifests/latest", headers={"Accept": OCI_MANIFEST})
                assert named.status_code == 200
                fetched, refused = f"/v2/priv/lib/a/blobs/{digest}", f"/v2/pub/evil/blobs/{digest}"
                assert refused_during_a_fetch(first, fetched, other, refused, release) == blob
            assert public_gets == [0]
        finally:
            release.set()
            cache.stop()


def test_a_cold_blobs_client_gets_bytes_as_they_arrive_before_the_cache_has_written_them(tmp_path: Path) -> None:
    """The fetch's worker sends what the upstream sent before it is hashed and written: a first piece smaller than
    the storage writer's buffer (so not in the cache's file yet) reaches the client while the upstream holds back
    the rest, and the client still gets the blob whole once it is sent."""
    blob = os.urandom(1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    piece = len(blob) // 16
    release = threading.Event()
    with cutting_upstream(blob, cut_at=len(blob), pieces=16, release=release) as (url, gets):
        cache = mirror(tmp_path / "cache", url)
        try:
            with httpx.Client(base_url=cache.url, timeout=20) as client:
                with client.stream("GET", f"/v2/some/repo/blobs/{digest}") as answer:
                    assert answer.status_code == 200
                    received = b""
                    chunks = answer.iter_raw()
                    while len(received) < piece:  # a read timeout here: the bytes waited for the disk
                        received += next(chunks)
                    assert received == blob[:piece]
                    release.set()
                    received += b"".join(chunks)
                assert received == blob
            assert gets[0] == 1
        finally:
            release.set()
            cache.stop()


def test_a_cold_blob_streams_to_a_client_over_tls(tmp_path: Path) -> None:
    """Over plain HTTP a cold blob goes out with sendfile; over TLS the same stream goes through the TLS layer."""
    cert, key = self_signed(tmp_path, "cache", "127.0.0.1", ip="127.0.0.1")
    blob = os.urandom(6 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with cutting_upstream(blob, cut_at=len(blob), pieces=4, pause=0.1) as (url, gets):
        config = {"proxy": {"remoteurl": url}, "http": {"tls": {"certificate": str(cert), "key": str(key)}}}
        cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=config, tls=True).start()
        try:
            trusting = ssl.create_default_context(cafile=str(cert))
            with httpx.Client(base_url=cache.url, verify=trusting, timeout=60) as client:
                cold = client.get(f"/v2/some/repo/blobs/{digest}")
                assert (cold.status_code, cold.headers["Content-Length"]) == (200, str(len(blob)))
                assert cold.content == blob
                assert client.get(f"/v2/some/repo/blobs/{digest}").content == blob
            assert gets[0] == 1
        finally:
            cache.stop()


def test_a_pull_through_the_cache_is_announced_as_pulls_only(tmp_path: Path) -> None:
    """What the cache stores of its upstream is no push: a webhook that builds or scans on pushes fired on every
    cold pull (Distribution's proxy reports the pulls only). A blob served while it is fetched is a pull like a
    stored one, and a client taking no manifest list is one pull, not two."""
    receiver = Receiver().start()
    ours = RegistryProcess(tmp_path / "upstream", kind="ours").start()
    notifications = {"endpoints": [receiver.endpoint()]}
    extra = {"proxy": {"remoteurl": ours.url}, "notifications": notifications}
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=extra).start()
    try:
        with httpx.Client(base_url=ours.url, timeout=60) as source, httpx.Client(base_url=cache.url) as client:
            image = seed(source, "team/app", "v1")
            _, blobs = pull_all(client, "team/app", "v1")  # cold: everything fetched from the upstream
        expected = 1 + len(blobs)
        events = receiver.wait_for(lambda got: len(got) >= expected)
        time.sleep(1.5)  # the pulls are flushed a moment after: anything more would have come
        events = receiver.events
        assert sorted((e["action"], e["target"]["digest"]) for e in events) == sorted(
            [("pull", image.digest)] + [("pull", digest) for digest in blobs]
        )
    finally:
        cache.stop()
        ours.stop()
        receiver.stop()


def test_fsck_takes_cached_manifests_whose_blobs_are_not_pulled_yet_for_what_they_are(tmp_path: Path) -> None:
    """A pull-through cache stores a manifest when first asked and its blobs when they are pulled: in between, its
    references are no problem, and fsck said "broken image" and exited 1 on every healthy cache. A local
    repository's manifest missing a blob still is one."""
    ours = RegistryProcess(tmp_path / "upstream", kind="ours").start()
    extra = {"proxy": {"upstreams": [{"prefix": "up", "remoteurl": ours.url}]}}
    cache = RegistryProcess(tmp_path / "cache", kind="ours", extra_config=extra).start()

    def fsck() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "docker_registry.server", "fsck", str(cache.workdir / "config.yml")]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    try:
        with httpx.Client(base_url=ours.url, timeout=60) as source, httpx.Client(base_url=cache.url) as client:
            seed(source, "lib/img", "v1")
            answer = client.get("/v2/up/lib/img/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert answer.status_code == 200
            healthy = fsck()
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr
            assert "not fetched yet" in healthy.stdout + healthy.stderr
            local = image_manifest(client, "local/app")
            push(client, "local/app", local, "v1")
            layer = json.loads(local.body)["layers"][0]["digest"]
            assert client.delete(f"/v2/local/app/blobs/{layer}").status_code == 202
        broken = fsck()
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "broken image: local/app:v1" in broken.stdout + broken.stderr
    finally:
        cache.stop()
        ours.stop()
