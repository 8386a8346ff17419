"""The registry with its metadata in PostgreSQL: a private server on loopback, pushes, pulls, tags, referrers,
deletes, and races (READ COMMITTED lets them happen where SQLite serialises writers): many clients pushing one
manifest, or different manifests to one tag, at once; deletes racing a manifest PUT that references what they
delete; pushes naming the same tags in different orders."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from postgres_cluster import PostgresCluster

from registry_api import (
    OCI_INDEX,
    OCI_MANIFEST,
    Pushed,
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
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="CNCF Distribution keeps no SQL metadata")


@pytest.fixture(scope="session")
def pg_registry(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    server = RegistryProcess(
        tmp_path_factory.mktemp("pg-registry"), workers=2, extra_config={"database": {"url": postgres_url}}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def pg(pg_registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pg_registry.url, timeout=30, verify=False) as c:
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


def test_web_ui_pages_on_postgresql(pg: httpx.Client) -> None:
    """The UI's browse queries (search with LIKE wildcards escaped, summaries, tag pages by push time and by name,
    the latest pushes) on PostgreSQL; the pg registry has no auth, so every page is open."""
    repo = unique_repo("pg-ui")
    push(pg, repo, image_manifest(pg, repo), "a-tag")
    time.sleep(0.01)
    push(pg, repo, image_manifest(pg, repo), "b-tag")
    assert repo in pg.get("/ui/repositories", params={"q": repo[-8:].upper()}).text, "any case"
    assert pg.get("/ui/repositories", params={"q": "%"}).text.count("pg-ui") == 0
    by_push = pg.get(f"/ui/repositories/{repo}").text
    assert by_push.index(">b-tag<") < by_push.index(">a-tag<")
    by_name = pg.get(f"/ui/repositories/{repo}", params={"sort": "name", "page": "1"}).text
    assert by_name.index(">a-tag<") < by_name.index(">b-tag<")
    assert repo in pg.get("/ui/").text


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
        with httpx.Client(base_url=url, timeout=60, verify=False) as own:  # plain HTTP: skip loading CAs
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


def test_different_manifests_pushed_to_one_new_tag_at_once(pg: httpx.Client, pg_registry: RegistryProcess) -> None:
    """Each client pushes its own manifest to the same tag, which does not exist yet: every push succeeds, and the
    tag ends as one row pointing at one of them (the upsert, not a look-up then an INSERT, settles the race).
    Several rounds, each on a new tag: the first stores the manifests too, the later ones find them stored."""
    repo = unique_repo("pg-tag-race")
    count = 12
    manifests = [image_manifest(pg, repo) for _ in range(count)]
    for round_ in range(8):
        tag = f"contested-{round_}"
        start = threading.Barrier(count)

        def put(c: httpx.Client, i: int, tag: str = tag, start: threading.Barrier = start) -> int:
            assert c.get("/v2/").status_code == 200  # connected before the barrier, so the PUTs leave together
            start.wait(10)
            return put_manifest(c, repo, tag, manifests[i].body, manifests[i].media_type).status_code

        assert _concurrently(count, pg_registry.url, put) == [201] * count, f"round {round_}"
        assert pg.get(f"/v2/{repo}/tags/list").json()["tags"] == sorted(f"contested-{r}" for r in range(round_ + 1))
        got = get_manifest(pg, repo, tag)
        assert got.status_code == 200, got.text
        winners = [m for m in manifests if m.body == got.content]
        assert len(winners) == 1, "the tag must point at one whole pushed manifest"
        assert got.headers["Docker-Content-Digest"] == winners[0].digest == sha256(got.content)
        head = get_manifest(pg, repo, tag, method="HEAD")
        assert head.status_code == 200
        assert head.headers["Docker-Content-Digest"] == winners[0].digest
        assert head.headers["Content-Length"] == str(len(got.content))
    for manifest in manifests:  # every pushed manifest stays pullable by digest
        assert get_manifest(pg, repo, manifest.digest).content == manifest.body


SLOW_COMMIT = "org.example.test.slow-commit"
"""A manifest annotated with this key holds its PUT's transaction open for `SLOW_COMMIT_SECONDS` (see
`slow_commits`)."""
SLOW_COMMIT_SECONDS = 1.5


def _plain_url(postgres_url: str) -> str:
    return postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def _sleeping_trigger(
    postgres_url: str, name: str, table: str, when: str, condition: str
) -> Iterator[Callable[[], None]]:
    """A trigger `name` on `table`, firing `when` (e.g. `AFTER INSERT`) for rows matching `condition`, that sleeps
    `SLOW_COMMIT_SECONDS` in the writing transaction; yields a function that waits until some transaction sleeps
    in it. Dropped afterwards."""
    import psycopg

    url = _plain_url(postgres_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({SLOW_COMMIT_SECONDS}); RETURN NEW; END $$"
        )
        conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        conn.execute(
            f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION {name}()"
        )

    def wait_until_a_write_sleeps() -> None:
        deadline = time.monotonic() + 20
        with psycopg.connect(url, autocommit=True) as conn:
            while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()[0]:
                assert time.monotonic() < deadline, f"no write reached the sleeping trigger {name}"
                time.sleep(0.01)

    try:
        yield wait_until_a_write_sleeps
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            conn.execute(f"DROP FUNCTION IF EXISTS {name}()")


@pytest.fixture
def slow_commits(postgres_url: str, pg_registry: RegistryProcess) -> Iterator[Callable[[], None]]:
    """A trigger in the registry's database: inserting the row of a manifest annotated `SLOW_COMMIT` sleeps, so
    the PUT's transaction stays open after it checked (and locked) the references, until its commit. That is the
    window a concurrent delete races into, made wide and certain instead of left to luck."""
    condition = f"NEW.annotations LIKE '%{SLOW_COMMIT}%'"
    with _sleeping_trigger(postgres_url, "test_slow_commit", "manifests", "AFTER INSERT", condition) as wait:
        yield wait


def _race_delete_with_put(
    pg: httpx.Client, url: str, wait_until_a_put_sleeps: Callable[[], None], repo: str, manifest: Pushed, delete: str
) -> tuple[httpx.Response, httpx.Response, int]:
    """PUT `manifest` and, once its transaction checked the references and sleeps before committing, DELETE
    `delete`; returns the PUT's answer, the DELETE's, and the manifest's status read right after the DELETE
    answered."""
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=60, verify=False) as own:
        pending = pool.submit(put_manifest, own, repo, manifest.digest, manifest.body, manifest.media_type)
        wait_until_a_put_sleeps()
        deleted = pg.delete(delete)
        seen_after_delete = get_manifest(pg, repo, manifest.digest).status_code
        put = pending.result()
    return put, deleted, seen_after_delete


def _assert_put_ordered_with_delete(
    pg: httpx.Client, repo: str, manifest: Pushed, put: httpx.Response, deleted: httpx.Response, seen: int
) -> None:
    """Either the PUT came first (its manifest is visible as soon as the delete answers) or the delete did (the
    PUT fails and stores nothing): a manifest that appears only after the delete was acknowledged was committed
    with a reference the delete had already removed."""
    assert deleted.status_code == 202, deleted.text
    if put.status_code == 201:
        assert seen == 200, (
            "the delete was acknowledged before the PUT that had checked the reference committed: the stored "
            "manifest references something deleted before it was stored (references not locked until the commit?)"
        )
    else:
        assert_error(put, 400, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN")
        assert_error(get_manifest(pg, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")
    # The PUT reached its commit before the delete was sent (wait_until_a_put_sleeps): it must have won.
    assert put.status_code == 201, put.text
    assert get_manifest(pg, repo, manifest.digest).content == manifest.body


def test_blob_delete_racing_a_manifest_put_waits_for_its_commit(
    pg: httpx.Client, pg_registry: RegistryProcess, slow_commits: Callable[[], None]
) -> None:
    """A blob delete arriving while a manifest PUT that references the blob is between its reference check and its
    commit must wait for that commit (the check locks the rows it read, FOR SHARE).

    Like Distribution, the registry lets a client delete a blob a stored manifest references, so "every blob of
    a stored manifest exists" is no invariant; what must hold is that the PUT and the delete happen in some order.
    Without the lock the delete commits in the PUT's window and the manifest is stored afterwards, with a
    reference already gone when it was checked as present."""
    repo = unique_repo("pg-ref-race")
    manifest = image_manifest(pg, repo, annotations={SLOW_COMMIT: "yes"})
    layer = json.loads(manifest.body)["layers"][0]["digest"]
    put, deleted, seen = _race_delete_with_put(
        pg, pg_registry.url, slow_commits, repo, manifest, f"/v2/{repo}/blobs/{layer}"
    )
    _assert_put_ordered_with_delete(pg, repo, manifest, put, deleted, seen)
    assert pg.head(f"/v2/{repo}/blobs/{layer}").status_code == 404, "the delete, ordered after the PUT, took effect"


def test_child_manifest_delete_racing_an_index_put_waits_for_its_commit(
    pg: httpx.Client, pg_registry: RegistryProcess, slow_commits: Callable[[], None]
) -> None:
    """The same for an index and a child manifest deleted while the index PUT is about to commit."""
    repo = unique_repo("pg-ref-race")
    child = image_manifest(pg, repo)
    push(pg, repo, child)
    document = json.loads(index_manifest([child]).body)
    document["annotations"] = {SLOW_COMMIT: "yes"}
    body = canonical(document)
    index = Pushed(body, OCI_INDEX, sha256(body))
    put, deleted, seen = _race_delete_with_put(
        pg, pg_registry.url, slow_commits, repo, index, f"/v2/{repo}/manifests/{child.digest}"
    )
    _assert_put_ordered_with_delete(pg, repo, index, put, deleted, seen)
    assert get_manifest(pg, repo, child.digest).status_code == 404, "the delete, ordered after the PUT, took effect"


SLOW_TAG = "slow-tag-write"


@pytest.fixture
def slow_tag_writes(postgres_url: str, pg_registry: RegistryProcess) -> Iterator[Callable[[], None]]:
    """A trigger: writing a tag named `SLOW_TAG` sleeps before the row is written, after the push found the
    manifest it tags."""
    condition = f"NEW.name = '{SLOW_TAG}'"
    with _sleeping_trigger(postgres_url, "test_slow_tag", "tags", "BEFORE INSERT OR UPDATE", condition) as wait:
        yield wait


def test_a_manifest_deleted_while_a_push_tags_it_is_no_500(
    pg: httpx.Client, pg_registry: RegistryProcess, slow_tag_writes: Callable[[], None]
) -> None:
    """A push of a stored manifest under a new tag, and a delete of that manifest by digest, at once (a probe: 21
    of 100 such PUTs answered 500 across two nodes). The push found the manifest's row unlocked, the delete
    committed, and the tag then pointed at no row: a foreign key violation. Now the push holds the row until its
    commit, the delete waits for it and then removes both: each answers as if the other came first or after."""
    repo = unique_repo("pg-tag-race")
    manifest = image_manifest(pg, repo)
    push(pg, repo, manifest, "base")
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=pg_registry.url, timeout=60, verify=False) as own:
        pending = pool.submit(put_manifest, own, repo, SLOW_TAG, manifest.body, manifest.media_type)
        slow_tag_writes()
        deleted = pg.delete(f"/v2/{repo}/manifests/{manifest.digest}")
        put = pending.result()
    assert put.status_code == 201, put.text
    assert deleted.status_code == 202, deleted.text
    assert_error(get_manifest(pg, repo, SLOW_TAG), 404, "MANIFEST_UNKNOWN")  # the delete came second and took it
    assert pg.get(f"/v2/{repo}/tags/list").json().get("tags") in (None, [])


SLOW_DELETE_TAG = "slow-delete"


def test_a_manifest_deleted_while_a_push_tags_it_again_takes_the_locks_in_one_order(
    pg: httpx.Client, pg_registry: RegistryProcess, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """A delete by digest removes the manifest's tags, then the manifest; a push of the same manifest under a tag it
    already had locks the manifest (FOR KEY SHARE), then the tag. Unless the delete locks the manifest first, each
    waits for the other: PostgreSQL broke the cycle after a second (a review reproduced it). Here the delete sleeps
    between its tags and its manifest; the push must wait for it, then store the manifest again."""
    repo = unique_repo("pg-lock-order")
    manifest = image_manifest(pg, repo)
    push(pg, repo, manifest, SLOW_DELETE_TAG)
    log = postgres_cluster.root / "log"
    logged = log.stat().st_size
    condition = f"OLD.name = '{SLOW_DELETE_TAG}'"
    with (
        _sleeping_trigger(postgres_url, "test_slow_delete", "tags", "AFTER DELETE", condition) as wait,
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=pg_registry.url, timeout=60, verify=False) as own,
    ):
        deleting = pool.submit(own.delete, f"/v2/{repo}/manifests/{manifest.digest}")
        wait()
        put = put_manifest(pg, repo, SLOW_DELETE_TAG, manifest.body, manifest.media_type)
        deleted = deleting.result()
    assert deleted.status_code == 202, deleted.text
    assert put.status_code == 201, put.text
    assert get_manifest(pg, repo, SLOW_DELETE_TAG).content == manifest.body  # the push came second
    with log.open("rb") as text:
        text.seek(logged)
        assert b"deadlock detected" not in text.read()


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


def test_two_nodes_on_one_database_deliver_every_event_once_in_commit_order(postgres_url: str, tmp_path: Path) -> None:
    """Notifications (issue 13) with several nodes: events written by both nodes' workers concurrently, one
    process of the four holding the lease; every event arrives once, and each repository's in the order of its
    pushes (the advisory lock orders inserting transactions, so no id is skipped by the cursor)."""
    from notification_receiver import Receiver

    receiver = Receiver().start()
    config = {
        "database": {"url": postgres_url},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "shared-blobs")}},
        "notifications": {"endpoints": [receiver.endpoint("pg-nodes")]},
    }
    nodes = [RegistryProcess(tmp_path / f"node{i}", workers=2, extra_config=config).start() for i in range(2)]
    try:
        repos = [unique_repo("pg-events") for _ in range(8)]

        def push_blobs(n: int) -> list[str]:
            node, pushed = nodes[n % 2], []
            with httpx.Client(base_url=node.url, timeout=30) as client:
                for i in range(10):
                    data = f"{repos[n]} blob {i} {random_bytes(4).hex()}".encode()
                    location = client.post(f"/v2/{repos[n]}/blobs/uploads/").headers["Location"]
                    answer = client.put(location, params={"digest": sha256(data)}, content=data)
                    assert answer.status_code == 201, answer.text
                    pushed.append(sha256(data))
            return pushed

        with ThreadPoolExecutor(len(repos)) as pool:
            expected = dict(zip(repos, pool.map(push_blobs, range(len(repos))), strict=True))
        events = receiver.wait_for(lambda got: len(got) >= 10 * len(repos), timeout=60)
        time.sleep(2)
        events = receiver.events
        assert len(events) == 10 * len(repos)
        assert len({e["id"] for e in events}) == len(events)
        for repo, digests in expected.items():
            assert [e["target"]["digest"] for e in events if e["target"]["repository"] == repo] == digests
        logs = "".join(node.log_path.read_text() for node in nodes)
        assert logs.count("notifications: this process delivers events") == 1
    finally:
        for node in nodes:
            node.stop()
        receiver.stop()
