"""Garbage collection under a push storm (issue 9): clients keep pushing images that reuse old layers and keep
moving tags, with raw HTTP and with skopeo, while the registry's two workers collect every second with no grace
period (untagged manifests included) and `garbage-collect` runs beside them. Afterwards every tag pulls completely
and verifies, and nothing unreferenced is left: no row, no file."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_images import OciLayout
from e2e_tools import require
from gc_checks import collect_beside_online_gc, pull_and_verify
from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from registry_api import canonical, descriptor, get_manifest
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="garbage collection of this registry")

STORM_SECONDS = 20.0
REPOSITORIES = ("storm/a", "storm/b", "storm/c")
TAGS = ("t0", "t1", "t2", "t3")
ONLINE_GC = {"gc": {"enabled": True, "interval": "1s", "delay": "0s", "deleteuntagged": True}}


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HttpPusher:
    """Pushes images made of two layers from a small shared pool plus a new one, as a client does: HEAD each
    blob, mount it from another repository or upload it when missing, then the manifest under a random tag."""

    def __init__(self, url: str, pool: list[bytes], seed: int) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.pool = pool
        self.random = random.Random(seed)
        self.pushed = 0
        self.refused = 0
        self.unavailable = 0

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request, again after a while when the registry answers 503 (the database's write lock held past the
        lock timeout on a loaded machine), as clients retry."""
        for _attempt in range(20):
            response = self.client.request(method, url, **kwargs)
            if response.status_code != 503:
                return response
            self.unavailable += 1
            time.sleep(0.5)
        return response

    def _ensure_blob(self, repo: str, data: bytes) -> None:
        digest = _sha256(data)
        if self._request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return  # skipped, as clients do: the manifest PUT tells if it went meanwhile
        source = self.random.choice([r for r in REPOSITORIES if r != repo])
        mount = self._request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
        if mount.status_code == 201:
            return
        assert mount.status_code == 202, mount.text
        location = mount.headers["Location"]
        if self.random.random() < 0.5:  # monolithic
            done = self._request("PUT", location, params={"digest": digest}, content=data)
        else:  # chunked
            patched = self._request("PATCH", location, content=data)
            assert patched.status_code == 202, patched.text
            done = self._request("PUT", patched.headers["Location"], params={"digest": digest})
        assert done.status_code == 201, done.text

    def push_one(self) -> None:
        repo = self.random.choice(REPOSITORIES)
        layers = [*self.random.sample(self.pool, 2), random.randbytes(2048)]
        config = canonical({"architecture": "amd64", "os": "linux", "nonce": self.random.random()})
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(OCI_CONFIG, config),
                "layers": [descriptor(OCI_LAYER_GZIP, layer) for layer in layers],
            }
        )
        tag = self.random.choice(TAGS)
        for _attempt in range(20):
            for blob in [config, *layers]:
                self._ensure_blob(repo, blob)
            response = self._request(
                "PUT", f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            if response.status_code == 201:
                self.pushed += 1
                return
            # a blob it HEADed was collected before the manifest came: refused cleanly, pushed again
            assert response.status_code == 400, response.text
            assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", response.text
            self.refused += 1
        raise AssertionError(f"{repo}:{tag} could not be pushed in 20 attempts")


def _skopeo_storm(layout: OciLayout, images: list[str], url: str, stop: threading.Event, failures: list[str]) -> None:
    rounds = 0
    while not stop.is_set():
        image = images[rounds % len(images)]
        target = f"docker://{url.removeprefix('http://')}/storm/skopeo:{random.choice(TAGS)}"
        for _attempt in range(5):
            proc = subprocess.run(
                ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", layout.ref(image), target],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if proc.returncode == 0:
                break
        else:
            failures.append(proc.stderr)
        rounds += 1


def _assert_nothing_unreferenced(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "registry.db") as db:
        untagged = db.execute("SELECT count(*) FROM manifests WHERE id NOT IN (SELECT manifest_id FROM tags)")
        assert untagged.fetchone()[0] == 0
        unreferenced_links = db.execute(
            """SELECT count(*) FROM repository_blobs l WHERE NOT EXISTS (
                   SELECT 1 FROM manifest_references r JOIN manifests m ON m.id = r.manifest_id
                   WHERE r.digest = l.digest AND m.repository_id = l.repository_id)"""
        )
        assert unreferenced_links.fetchone()[0] == 0
        unlinked = db.execute(
            "SELECT count(*) FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM repository_blobs l WHERE l.digest = b.digest)"
        )
        assert unlinked.fetchone()[0] == 0
        rows = {digest for (digest,) in db.execute("SELECT digest FROM blobs")}
    files = {"sha256:" + path.parent.name for path in (data_dir / "blobs").rglob("data")}
    assert files == rows


def test_push_storm_while_two_workers_collect_with_no_grace_period(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    require("skopeo")
    server = make_registry(workers=2, extra_config=ONLINE_GC)
    layout = OciLayout(tmp_path / "layout")
    images = [f"img{n}" for n in range(3)]
    for name in images:
        layout.add_image(name, layer_count=2, layer_size=8 * 1024)
    pool = [random.randbytes(4096 + n) for n in range(12)]
    pushers = [HttpPusher(server.url, pool, seed) for seed in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []
    skopeo_failures: list[str] = []

    def storm(pusher: HttpPusher) -> None:
        try:
            while not stop.is_set():
                pusher.push_one()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=storm, args=(pusher,)) for pusher in pushers]
    threads.append(threading.Thread(target=_skopeo_storm, args=(layout, images, server.url, stop, skopeo_failures)))
    for thread in threads:
        thread.start()
    collections = 0
    deadline = time.monotonic() + STORM_SECONDS
    while time.monotonic() < deadline:
        collect_beside_online_gc(server, "--delete-untagged")  # beside the online collector, which runs every second
        collections += 1
        time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(180)

    assert not errors, errors
    assert not skopeo_failures, skopeo_failures[:1]
    assert sum(p.pushed for p in pushers) > 20
    assert collections >= 3
    print(f"pushed {sum(p.pushed for p in pushers)}, refused {sum(p.refused for p in pushers)}, {collections} runs")
    summary = collect_beside_online_gc(server, "--delete-untagged")
    assert summary["deleted"]["blobs"] >= 0
    with httpx.Client(base_url=server.url, timeout=60) as client:
        repositories = client.get("/v2/_catalog").json()["repositories"]
        assert set(repositories) >= {*REPOSITORIES, "storm/skopeo"}
        for repo in repositories:
            for tag in client.get(f"/v2/{repo}/tags/list").json()["tags"] or []:
                pull_and_verify(client, repo, tag)
        for image in images:  # skopeo's images are still whole where a tag names them
            manifest = layout.read_blob(layout_digest(layout, image))
            for tag in TAGS:
                response = get_manifest(client, "storm/skopeo", tag)
                if response.status_code == 200 and response.content == manifest:
                    pull_and_verify(client, "storm/skopeo", tag)
    _assert_nothing_unreferenced(server.data_dir)


def layout_digest(layout: OciLayout, tag: str) -> str:
    index = json.loads((layout.path / "index.json").read_text())
    return next(m["digest"] for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


def test_collections_beside_pushes_on_postgresql(
    postgres_url: str, make_registry: Callable[..., RegistryProcess]
) -> None:
    """The same on PostgreSQL, where writers do not queue on one lock: deletions lock and check again."""
    server = make_registry(workers=2, extra_config={**ONLINE_GC, "database": {"url": postgres_url}})
    pool = [random.randbytes(4096 + n) for n in range(12)]
    pushers = [HttpPusher(server.url, pool, seed) for seed in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def storm(pusher: HttpPusher) -> None:
        try:
            while not stop.is_set():
                pusher.push_one()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=storm, args=(pusher,)) for pusher in pushers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + STORM_SECONDS / 2
    while time.monotonic() < deadline:
        collect_beside_online_gc(server, "--delete-untagged")
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(180)

    assert not errors, errors
    collect_beside_online_gc(server, "--delete-untagged")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for repo in REPOSITORIES:
            for tag in client.get(f"/v2/{repo}/tags/list").json()["tags"] or []:
                pull_and_verify(client, repo, tag)
    files = {"sha256:" + path.parent.name for path in (server.data_dir / "blobs").rglob("data")}
    referenced = {
        layer["digest"]
        for pusher in pushers[:1]
        for repo in REPOSITORIES
        for tag in pusher.client.get(f"/v2/{repo}/tags/list").json()["tags"] or []
        for layer in _blobs_of(pusher.client, repo, tag)
    }
    assert files == referenced  # every file a tag needs, and no other


def _blobs_of(client: httpx.Client, repo: str, tag: str) -> list[dict[str, Any]]:
    document = json.loads(get_manifest(client, repo, tag).content)
    return [document["config"], *document["layers"]]
