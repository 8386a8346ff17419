"""The registry with its metadata in PostgreSQL: a private server on loopback, pushes, pulls, tags, referrers,
deletes, and many clients pushing one manifest at once (READ COMMITTED lets them race where SQLite serialises)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from prerequisites import PSYCOPG_INSTALL, missing, require_module
from registry_api import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    canonical,
    get_manifest,
    image_manifest,
    index_manifest,
    push,
    put_manifest,
    random_bytes,
    sha256,
    unique_repo,
)
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="CNCF Distribution keeps no SQL metadata")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` user the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL cluster in a temporary directory, listening on a free loopback port.

    Not under pytest's temporary root: that is private to root, and the server runs as `postgres`."""
    require_module("psycopg", PSYCOPG_INSTALL)
    bin_dir = _pg_bin()
    if bin_dir is None:
        missing("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="registry-test-postgres-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_registry(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    server = RegistryProcess(
        tmp_path_factory.mktemp("pg-registry"), workers=2, extra_config={"database": {"url": postgres_url}}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def pg(pg_registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pg_registry.url, timeout=30) as c:
        yield c


def test_push_pull_tags_and_catalog(pg: httpx.Client) -> None:
    repo = unique_repo("pg")
    manifest = image_manifest(pg, repo, layers=2)
    push(pg, repo, manifest, "v1")
    push(pg, repo, manifest, "v2")
    assert get_manifest(pg, repo, "v1").content == manifest.body
    assert pg.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1", "v2"]
    page = pg.get(f"/v2/{repo}/tags/list", params={"n": "1"})
    assert page.json()["tags"] == ["v1"]
    assert 'rel="next"' in page.headers["Link"]
    assert repo in pg.get("/v2/_catalog", params={"n": "10000"}).json()["repositories"]
    layer = json.loads(manifest.body)["layers"][0]
    assert len(pg.get(f"/v2/{repo}/blobs/{layer['digest']}").content) == layer["size"]


def test_index_and_referrers(pg: httpx.Client) -> None:
    repo = unique_repo("pg")
    child = image_manifest(pg, repo)
    push(pg, repo, child)
    index = index_manifest([child])
    push(pg, repo, index, "multi")
    assert get_manifest(pg, repo, "multi").headers["Content-Type"] == OCI_INDEX
    signature = image_manifest(pg, repo, artifact_type="application/vnd.example.sig", subject=child)
    push(pg, repo, signature)
    found = pg.get(f"/v2/{repo}/referrers/{child.digest}").json()["manifests"]
    assert [(d["digest"], d["artifactType"]) for d in found] == [(signature.digest, "application/vnd.example.sig")]


def test_deletes(pg: httpx.Client) -> None:
    repo = unique_repo("pg")
    manifest = image_manifest(pg, repo)
    push(pg, repo, manifest, "gone")
    assert pg.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    assert_error(get_manifest(pg, repo, "gone"), 404, "MANIFEST_UNKNOWN")
    config = json.loads(manifest.body)["config"]["digest"]
    assert pg.delete(f"/v2/{repo}/blobs/{config}").status_code == 202
    assert_error(pg.get(f"/v2/{repo}/blobs/{config}"), 404, "BLOB_UNKNOWN")
    assert_error(put_manifest(pg, repo, "again", manifest.body, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")


def test_long_artifact_type_is_refused_not_a_500(pg: httpx.Client) -> None:
    repo = unique_repo("pg")
    manifest = image_manifest(pg, repo, artifact_type="application/" + "x" * 300)
    assert_error(put_manifest(pg, repo, "long", manifest.body, OCI_MANIFEST), 400, "MANIFEST_INVALID")


def _concurrently(count: int, url: str, action: Callable[[httpx.Client, int], int]) -> list[int]:
    def run(i: int) -> int:
        with httpx.Client(base_url=url, timeout=60) as own:
            return action(own, i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.parametrize("round_", range(3))
def test_many_clients_push_one_manifest(pg: httpx.Client, pg_registry: RegistryProcess, round_: int) -> None:
    repo = unique_repo("pg-race")
    manifest = image_manifest(pg, repo)

    def put(c: httpx.Client, i: int) -> int:
        return put_manifest(c, repo, f"t{i % 3}", manifest.body, manifest.media_type).status_code

    assert _concurrently(12, pg_registry.url, put) == [201] * 12
    assert sorted(pg.get(f"/v2/{repo}/tags/list").json()["tags"]) == ["t0", "t1", "t2"]


def test_many_clients_push_one_blob_into_new_repositories(pg: httpx.Client, pg_registry: RegistryProcess) -> None:
    data = random_bytes(5000)
    digest = sha256(data)
    repo = unique_repo("pg-race")

    def upload(c: httpx.Client, _i: int) -> int:
        return c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code

    assert _concurrently(8, pg_registry.url, upload) == [201] * 8
    assert pg.get(f"/v2/{repo}/blobs/{digest}").content == data
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    assert put_manifest(pg, repo, "empty", index, OCI_INDEX).status_code == 201


def test_pushes_naming_the_same_tags_in_other_orders_do_not_deadlock(
    pg: httpx.Client, pg_registry: RegistryProcess
) -> None:
    """`PUT .../manifests/<digest>?tag=a&tag=b` beside `?tag=b&tag=a`: each transaction locks its tags as it
    writes them, so unless every transaction takes them in one order, two can each hold the tag the other waits
    for, and PostgreSQL aborts one (a 503 for a push that did nothing wrong)."""
    repo = unique_repo("pg-tag-order")
    count = 8
    manifests = [image_manifest(pg, repo) for _ in range(count)]
    for round_ in range(3):
        tags = [f"a{round_}", f"b{round_}", f"c{round_}", f"d{round_}"]
        start = threading.Barrier(count)

        def put(c: httpx.Client, i: int, tags: list[str] = tags, start: threading.Barrier = start) -> int:
            named = tags if i % 2 else tags[::-1]
            manifest = manifests[i]
            assert c.get("/v2/").status_code == 200
            start.wait(10)
            response = c.put(
                f"/v2/{repo}/manifests/{manifest.digest}",
                params=[("tag", tag) for tag in named],
                content=manifest.body,
                headers={"Content-Type": manifest.media_type},
            )
            return response.status_code

        assert _concurrently(count, pg_registry.url, put) == [201] * count, f"round {round_}"
        targets = {get_manifest(pg, repo, tag).headers["Docker-Content-Digest"] for tag in tags}
        assert targets <= {m.digest for m in manifests}
