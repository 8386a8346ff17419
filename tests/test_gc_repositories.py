"""Garbage collection of empty repositories (issue 9): a repository left with no tag, manifest, blob link or upload
session leaves the catalog once it has been empty for the grace period, and a push into it meanwhile always wins:
it either keeps the repository or, arriving after the deletion, creates it again, and its image pulls."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from postgres_cluster import PostgresCluster

from docker_registry.core.digest import parse_digest
from docker_registry.server.store import migrate
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.engine import create_engine, write_transaction
from gc_checks import collect_beside_online_gc, pull_and_verify
from registry_api import image_manifest, push, put_manifest, start_upload
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="garbage collection of this registry")

NO_ONLINE_GC = {"gc": {"enabled": False, "delay": "0s"}}
ONLINE_GC = {"gc": {"enabled": True, "interval": "1s", "delay": "0s", "deleteuntagged": True}}
CHURN_SECONDS = 15.0
CHURNED = ("churn/a", "churn/b")


def catalog(client: httpx.Client) -> list[str]:
    response = client.get("/v2/_catalog")
    assert response.status_code == 200, response.text
    repositories: list[str] = response.json()["repositories"]
    return repositories


def _push_image(client: httpx.Client, repo: str, tag: str) -> str:
    """Push a new image under `tag`, as a client does when a collection with no grace period takes a blob it had
    uploaded before its manifest came: again. Returns the manifest's digest."""
    for _attempt in range(20):
        pushed = image_manifest(client, repo, layers=2)
        response = put_manifest(client, repo, tag, pushed.body, pushed.media_type)
        if response.status_code == 201:
            return pushed.digest
        assert response.status_code == 400, (response.status_code, response.text)
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", response.text
    raise AssertionError(f"{repo}:{tag} could not be pushed in 20 attempts")


def test_an_emptied_repository_leaves_the_catalog(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(extra_config=NO_ONLINE_GC)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        gone = image_manifest(client, "gc/emptied", layers=1)
        push(client, "gc/emptied", gone, "v1")
        push(client, "gc/kept", image_manifest(client, "gc/kept", layers=1), "v1")
        assert client.delete(f"/v2/gc/emptied/manifests/{gone.digest}").status_code == 202
        assert catalog(client) == ["gc/emptied", "gc/kept"]  # its blob links are still there

        summary = collect_beside_online_gc(server)

        assert summary["deleted"]["repositories"] == 1
        assert summary["deleted"]["links"] == 2
        assert catalog(client) == ["gc/kept"]
        listed = client.get("/v2/gc/emptied/tags/list")
        assert listed.status_code == 404
        assert listed.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        pull_and_verify(client, "gc/kept", "v1")

        push(client, "gc/emptied", image_manifest(client, "gc/emptied", layers=1), "v2")  # a new push: it is back
        assert catalog(client) == ["gc/emptied", "gc/kept"]
        pull_and_verify(client, "gc/emptied", "v2")
        assert collect_beside_online_gc(server)["deleted"]["repositories"] == 0


def test_an_upload_session_keeps_its_repository(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(extra_config=NO_ONLINE_GC)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        pushed = image_manifest(client, "gc/pending", layers=1)
        push(client, "gc/pending", pushed)
        location = start_upload(client, "gc/pending")  # a push under way: its blobs are not uploaded yet
        assert client.delete(f"/v2/gc/pending/manifests/{pushed.digest}").status_code == 202

        assert collect_beside_online_gc(server)["deleted"]["repositories"] == 0
        assert catalog(client) == ["gc/pending"]

        assert client.delete(location).status_code == 204  # the client gives up
        assert collect_beside_online_gc(server)["deleted"]["repositories"] == 1
        assert catalog(client) == []


def test_an_empty_repository_stays_for_the_grace_period(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(extra_config={"gc": {"enabled": False, "delay": "1h"}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        pushed = image_manifest(client, "gc/recent", layers=1)
        push(client, "gc/recent", pushed)
        assert client.delete(f"/v2/gc/recent/manifests/{pushed.digest}").status_code == 202

        summary = collect_beside_online_gc(server)

        assert summary["deleted"]["repositories"] == 0
        assert catalog(client) == ["gc/recent"]
        dry = collect_beside_online_gc(server, "--dry-run")  # marked an instant ago: an hour to go
        assert dry["deleted"]["repositories"] == 0


def _churn(url: str, repo: str, stop: threading.Event, pushed: list[int], errors: list[BaseException]) -> None:
    """Push an image into `repo`, pull it, delete it, wait a moment (a collection may find the repository empty and
    delete it, or be deleting it when the next push comes), and again."""
    pause = random.Random(repo)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                digest = _push_image(client, repo, "latest")
                pull_and_verify(client, repo, "latest")  # what was pushed is there, whatever GC did meanwhile
                pushed.append(1)
                deleted = client.delete(f"/v2/{repo}/manifests/{digest}")
                assert deleted.status_code == 202, deleted.text
                stop.wait(pause.uniform(0, 1.5))
    except BaseException as error:
        errors.append(error)


def _churn_while_collecting(server: RegistryProcess) -> None:
    stop = threading.Event()
    pushed: list[int] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_churn, args=(server.url, repo, stop, pushed, errors)) for repo in CHURNED]
    for thread in threads:
        thread.start()
    collections = vanished = 0
    deadline = time.monotonic() + CHURN_SECONDS
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while time.monotonic() < deadline and not errors:
            collect_beside_online_gc(server, "--delete-untagged")  # beside the workers' collections, every second
            collections += 1
            vanished += len(set(CHURNED) - set(catalog(client)))
    stop.set()
    for thread in threads:
        thread.join(180)

    assert not errors, errors
    assert len(pushed) >= 10
    assert collections >= 3
    assert vanished > 0, "no repository was ever found deleted: the race was not run"
    print(f"pushed {len(pushed)}, {collections} collections, a churned repository missing {vanished} times")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        _push_image(client, "churn/a", "final")  # one of them gets an image for good, the other stays empty
        collect_beside_online_gc(server, "--delete-untagged")
        assert catalog(client) == ["churn/a"]
        pull_and_verify(client, "churn/a", "final")


def test_pushes_into_repositories_being_emptied_win(make_registry: Callable[..., RegistryProcess]) -> None:
    """Two workers collect every second with no grace period, and `garbage-collect` runs beside them, while
    clients keep pushing into repositories that their previous image's deletion left empty."""
    _churn_while_collecting(make_registry(workers=2, extra_config=ONLINE_GC))


def test_pushes_into_repositories_being_emptied_win_on_postgresql(
    postgres_cluster: PostgresCluster, make_registry: Callable[..., RegistryProcess]
) -> None:
    """The same on PostgreSQL, where a push and a deletion of its repository do not take turns."""
    database = {"url": postgres_cluster.new_database()}  # its own: collections here delete what others leave empty
    _churn_while_collecting(make_registry(workers=2, extra_config={**ONLINE_GC, "database": database}))


def test_a_push_holding_its_repository_keeps_it_from_deletion_on_postgresql(postgres_cluster: PostgresCluster) -> None:
    """The race itself, held open on purpose: a push has resolved its (empty, long marked) repository and is about
    to link a blob when a collection deletes that repository. The push locked the row `FOR KEY SHARE`, so the
    deletion waits for its commit, checks again, and keeps the repository; without the lock it deleted the row
    and the push's link failed on the foreign key."""
    engine = create_engine(postgres_cluster.new_database(), lock_timeout=20)
    migrate.upgrade(engine)
    store = CollectionQueries(engine, lock_timeout=20)
    long_ago = time.time() - 3600
    with write_transaction(engine) as conn:
        repository = store._repository_id(conn, "race/emptied", long_ago)
    store.mark_repositories(long_ago)
    digest = parse_digest("sha256:" + hashlib.sha256(b"layer").hexdigest())
    resolved = threading.Event()
    pushed: list[int] = []

    def push() -> None:
        with write_transaction(engine) as conn:
            repository_id = store._repository_id(conn, "race/emptied", time.time())
            resolved.set()
            time.sleep(1.0)  # the collection's deletion arrives meanwhile
            store._link(conn, repository_id, digest, 5, time.time())
        pushed.append(repository_id)

    thread = threading.Thread(target=push)
    thread.start()
    try:
        assert resolved.wait(30)
        deleted = store.delete_repositories([repository], time.time())
    finally:
        thread.join(60)
        engine.dispose()

    assert pushed == [repository]
    assert deleted == 0
    assert store.repository_candidates(time.time()) == []
