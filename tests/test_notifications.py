"""Notifications (issue 13) with a real webhook receiver: which requests produce which events, with Distribution's
fields; events written with their change survive a receiver that is down and a registry killed with SIGKILL, and
arrive exactly once, in order; a failing endpoint does not slow pushes; ignore rules and headers; one deliverer."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from notification_receiver import Receiver
from test_server_observability import scrape, total

from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from registry_api import (
    canonical,
    descriptor,
    get_manifest,
    image_manifest,
    push,
    push_blob,
    put_manifest,
    random_bytes,
    sha256,
    unique_repo,
)
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="event durability of docker-registry 3")

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB = "application/octet-stream"
PULL_LOSS_WINDOW = 0.1
"""docs/notifications.md: a SIGKILL loses at most a worker's last ~100 ms of pull events."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def notifying(receiver: Receiver, **endpoint: Any) -> dict[str, Any]:
    return {"notifications": {"endpoints": [receiver.endpoint(**endpoint)], "events": {"includereferences": True}}}


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str | None]]:
    """(action, repository, digest, tag) of each event, in the order received."""
    return [(e["action"], e["target"]["repository"], e["target"].get("digest"), e["target"].get("tag")) for e in events]


def test_push_pull_mount_delete_events_carry_distributions_fields(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = make_registry(extra_config=notifying(receiver, headers={"Authorization": ["Bearer s3cret"]}))
    repo, other = unique_repo("events"), unique_repo("events-mount")
    with httpx.Client(base_url=server.url, timeout=30, headers={"User-Agent": "events-test/1.0"}) as client:
        manifest = image_manifest(client, repo, layers=1)
        push(client, repo, manifest, "v1")
        config, layer = [d["digest"] for d in _references(manifest)]
        assert get_manifest(client, repo, "v1").status_code == 200  # a pull by tag
        assert get_manifest(client, repo, "v1", method="HEAD").status_code == 200  # HEAD: no event
        assert client.get(f"/v2/{repo}/blobs/{layer}").status_code == 200  # a blob pull
        assert client.head(f"/v2/{repo}/blobs/{layer}").status_code == 200  # HEAD: no event
        mounted = client.post(f"/v2/{other}/blobs/uploads/", params={"mount": layer, "from": repo})
        assert mounted.status_code == 201
        assert client.delete(f"/v2/{other}/blobs/{layer}").status_code == 202
        assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202  # the tag
        push(client, repo, manifest, "v2")
        assert client.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202

    events = receiver.wait_for(lambda got: len(got) >= 11)
    time.sleep(1)  # nothing more comes
    events = receiver.events
    assert sorted(summary(events), key=str) == sorted(
        [
            ("push", repo, config, None),
            ("push", repo, layer, None),
            ("push", repo, manifest.digest, "v1"),
            ("pull", repo, manifest.digest, "v1"),
            ("pull", repo, layer, None),
            ("mount", other, layer, None),
            ("delete", other, layer, None),
            ("delete", repo, None, "v1"),
            ("push", repo, manifest.digest, "v2"),
            ("delete", repo, manifest.digest, None),
            ("delete", repo, None, "v2"),
        ],
        key=str,
    )
    # changes arrive in the order they were made (pulls are written in batches, a moment later)
    changes = [s for s in summary(events) if s[0] != "pull"]
    assert changes == [
        ("push", repo, config, None),
        ("push", repo, layer, None),
        ("push", repo, manifest.digest, "v1"),
        ("mount", other, layer, None),
        ("delete", other, layer, None),
        ("delete", repo, None, "v1"),
        ("push", repo, manifest.digest, "v2"),
        ("delete", repo, manifest.digest, None),
        ("delete", repo, None, "v2"),  # the tag the manifest's deletion removed, as Distribution reports it
    ]
    for delivery in receiver.deliveries:
        assert delivery.headers["Content-Type"] == MEDIA_TYPE
        assert delivery.headers["Authorization"] == "Bearer s3cret"
        assert len(delivery.body["events"]) == 1
    assert len({e["id"] for e in events}) == len(events)
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", e["timestamp"]), e
        assert e["request"]["useragent"] == "events-test/1.0"
        assert e["request"]["host"] == server.host
        assert e["request"]["addr"].startswith("127.0.0.1:")
        assert e["request"]["id"]
        assert e["source"]["addr"].endswith(f":{server.port}")
        assert e["source"]["instanceID"]
        assert e["actor"] == {}

    by = {(s[0], s[2], s[3]): e for s, e in zip(summary(events), events, strict=True)}
    pushed = by[("push", manifest.digest, "v1")]
    assert pushed["request"]["method"] == "PUT"
    assert pushed["target"] == {
        "mediaType": OCI_MANIFEST,
        "size": len(manifest.body),
        "digest": manifest.digest,
        "length": len(manifest.body),
        "repository": repo,
        "url": f"{server.url}/v2/{repo}/manifests/{manifest.digest}",
        "tag": "v1",
        "references": _references(manifest),
    }
    pulled = by[("pull", manifest.digest, "v1")]
    assert pulled["request"]["method"] == "GET"
    assert pulled["target"]["mediaType"] == OCI_MANIFEST
    assert "references" not in pulled["target"]
    blob_pull = by[("pull", layer, None)]["target"]
    assert blob_pull == {
        "mediaType": BLOB,
        "size": 1024,
        "digest": layer,
        "length": 1024,
        "repository": repo,
        "url": f"{server.url}/v2/{repo}/blobs/{layer}",
    }
    mount = by[("mount", layer, None)]
    assert mount["request"]["method"] == "POST"
    assert mount["target"]["fromRepository"] == repo
    assert mount["target"]["size"] == 1024
    assert by[("delete", None, "v1")]["target"] == {"repository": repo, "tag": "v1"}
    assert by[("delete", None, "v2")]["target"] == {"repository": repo, "tag": "v2"}
    assert by[("delete", manifest.digest, None)]["target"] == {"repository": repo, "digest": manifest.digest}
    assert by[("delete", layer, None)]["target"] == {"repository": other, "digest": layer}


def test_deleting_a_manifest_by_digest_reports_each_tag_it_removed(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """Distribution sends a tag deletion for each tag pointing at a manifest deleted by digest, after the
    manifest's own: a receiver tracking tags (a deployer, a mirror) otherwise keeps tags that are gone."""
    server = make_registry(extra_config=notifying(receiver, ignore={"actions": ["push"]}))
    repo = unique_repo("events-untag")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        manifest = image_manifest(client, repo, layers=1)
        push(client, repo, manifest, "v1")
        push(client, repo, manifest, "stable")
        other = image_manifest(client, repo, layers=1)
        push(client, repo, other, "v2")  # another manifest's tag: not reported
        deleted = client.delete(f"/v2/{repo}/manifests/{manifest.digest}", headers={"X-Request-Id": "untag-1"})
        assert deleted.status_code == 202
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]

    events = receiver.wait_for(lambda got: len(got) >= 3)
    time.sleep(1)  # nothing more comes
    events = receiver.events
    assert summary(events) == [
        ("delete", repo, manifest.digest, None),
        ("delete", repo, None, "stable"),
        ("delete", repo, None, "v1"),
    ]
    for event in events:
        assert event["request"]["id"] == "untag-1"
        assert event["request"]["method"] == "DELETE"
        assert event["request"]["addr"].startswith("127.0.0.1:")
    assert events[1]["target"] == {"repository": repo, "tag": "stable"}


def test_credentials_of_an_endpoints_url_never_reach_the_log(make_registry: Callable[..., RegistryProcess]) -> None:
    """An endpoint that redirects in a loop fails each attempt; the warning said why with aiohttp's error, which
    names the URL with its query: a receiver's `?token=` was written to the log."""
    receiver = Receiver(status=307).start()
    try:
        url = f"{receiver.url}?token=tok3n-in-query"
        receiver.location = url
        endpoint = receiver.endpoint(url=url.replace("://", "://hook:pa55word@"), threshold=1, backoff="1s")
        server = make_registry(extra_config={"notifications": {"endpoints": [endpoint]}})
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push_blob(client, unique_repo("events-secret"), random_bytes(64))
        deadline = time.monotonic() + 30
        while "failures in a row" not in server.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log_path.read_text()
        assert "1 failures in a row (too many redirects" in log, log[-3000:]
        assert receiver.attempts > 1
        for secret in ("tok3n-in-query", "pa55word"):
            assert secret not in log, f"{secret} was logged"
    finally:
        receiver.stop()


def test_an_authorization_header_wins_over_credentials_in_the_endpoints_url(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """Go's client sends a configured `Authorization` header and ignores the URL's user part; aiohttp refused the
    combination, so the endpoint got nothing, ever ("delivery paused", no failure counted)."""
    endpoint = receiver.endpoint(
        url=receiver.url.replace("://", "://hook:pa55word@"), headers={"Authorization": ["Bearer s3cret"]}
    )
    server = make_registry(extra_config={"notifications": {"endpoints": [endpoint]}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, unique_repo("events-auth"), random_bytes(64))
    events = receiver.wait_for(lambda got: len(got) >= 1)
    assert events[0]["target"]["digest"] == digest
    assert receiver.deliveries[0].headers["Authorization"] == "Bearer s3cret"
    assert "delivery paused" not in server.log_path.read_text()


def test_the_clients_address_comes_from_forwarded_headers_only_when_they_name_one(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """As Distribution's `RemoteAddr`: the first `X-Forwarded-For` address, else `X-Real-Ip`, else the peer; a
    header naming no IP address is passed over (it was copied into `request.addr` as sent, any text a client
    chose)."""
    server = make_registry(extra_config=notifying(receiver, ignore={"actions": ["push"]}))
    repo = unique_repo("events-addr")
    sent = [
        {"X-Forwarded-For": "203.0.113.7 , 10.0.0.1"},
        {"X-Forwarded-For": "not-an-address", "X-Real-Ip": "2001:db8::5"},
        {"X-Forwarded-For": "<script>", "X-Real-Ip": "also bogus"},
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        manifest = image_manifest(client, repo, layers=1)
        push(client, repo, manifest, "v1")
        for number, headers in enumerate(sent):
            headers = {**headers, "X-Request-Id": f"addr-{number}", "Accept": OCI_MANIFEST}
            assert client.get(f"/v2/{repo}/manifests/v1", headers=headers).status_code == 200
    events = receiver.wait_for(lambda got: len(got) >= len(sent))
    addr = {e["request"]["id"]: e["request"]["addr"] for e in events}
    assert addr["addr-0"] == "203.0.113.7"
    assert addr["addr-1"] == "2001:db8::5"
    assert addr["addr-2"].startswith("127.0.0.1:"), addr


def _references(manifest: Any) -> list[dict[str, Any]]:
    document = json.loads(manifest.body)
    return [
        {"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]}
        for d in [document["config"], *document["layers"]]
    ]


def test_authenticated_user_is_the_actor(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Any
) -> None:
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'wonderland', bcrypt.gensalt(4)).decode()}\n")
    config = notifying(receiver)
    config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    server = make_registry(extra_config=config)
    repo = unique_repo("actor")
    with httpx.Client(base_url=server.url, timeout=30, auth=("alice", "wonderland")) as client:
        digest = push_blob(client, repo, b"who pushed me")
    (event,) = receiver.wait_for(lambda got: len(got) >= 1)
    assert event["actor"] == {"name": "alice"}
    assert event["target"]["digest"] == digest


def test_pull_events_name_each_client_even_on_one_connection(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """The recorder remembers clients to describe them cheaply; requests on one connection that differ in their
    headers (a proxy forwarding several clients) still each get their own user agent, address and URL."""
    server = make_registry(extra_config=notifying(receiver, batch=10), workers=1)
    repo = unique_repo("clients")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push(client, repo, image_manifest(client, repo, layers=1), "v1")
        for headers in (
            {"User-Agent": "first/1"},
            {"User-Agent": "second/2", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
            {"User-Agent": "first/1"},
        ):
            answer = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST, **headers})
            assert answer.status_code == 200
    pulls = [e for e in receiver.wait_for(lambda got: len(got) >= 6) if e["action"] == "pull"]
    assert [e["request"]["useragent"] for e in pulls] == ["first/1", "second/2", "first/1"]
    assert pulls[1]["request"]["addr"] == "203.0.113.7"
    assert pulls[0]["request"]["addr"] == pulls[2]["request"]["addr"] != "203.0.113.7"
    assert pulls[1]["target"]["url"].startswith("https://")
    assert pulls[0]["target"]["url"].startswith("http://")


def test_a_look_at_a_manifest_in_the_web_ui_is_no_pull(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """Receivers count pulls (scanners, usage reports): a person reading the manifest's page in the web UI pulls
    nothing, a client's GET does."""
    server = make_registry(extra_config=notifying(receiver), workers=1)
    repo = unique_repo("looked")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = image_manifest(client, repo)
        push(client, repo, image, "v1")
        for reference in ("v1", image.digest):
            page = client.get(f"/ui/repositories/{repo}/-/manifests/{reference}")
            assert page.status_code == 200
            assert image.digest in page.text
        assert get_manifest(client, repo, "v1").status_code == 200
    events = receiver.wait_for(lambda got: any(e["action"] == "pull" for e in got))
    time.sleep(1.0)  # anything recorded after the pull would have arrived by now
    pulls = [e for e in receiver.events if e["action"] == "pull"]
    assert summary(pulls) == [("pull", repo, image.digest, "v1")], summary(events)


def test_no_endpoint_records_nothing(make_registry: Callable[..., RegistryProcess], receiver: Receiver) -> None:
    server = make_registry(extra_config={"notifications": {"endpoints": [receiver.endpoint(disabled=True)]}}, workers=1)
    repo = unique_repo("quiet")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push(client, repo, image_manifest(client, repo), "v1")
        assert get_manifest(client, repo, "v1").status_code == 200
    time.sleep(1.5)
    assert receiver.attempts == 0
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_ignore_rules_per_endpoint(make_registry: Callable[..., RegistryProcess]) -> None:
    no_pulls, no_blobs, no_oci = Receiver().start(), Receiver().start(), Receiver().start()
    try:
        endpoints = [
            no_pulls.endpoint("no-pulls", ignore={"actions": ["pull"]}),
            no_blobs.endpoint("no-blobs", ignoredmediatypes=[BLOB]),
            no_oci.endpoint("no-oci", ignore={"mediatypes": [OCI_MANIFEST]}),
        ]
        server = make_registry(extra_config={"notifications": {"endpoints": endpoints}})
        repo = unique_repo("ignore")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            manifest = image_manifest(client, repo)
            push(client, repo, manifest, "v1")
            assert get_manifest(client, repo, "v1").status_code == 200
        everything = [("push", BLOB), ("push", BLOB), ("push", OCI_MANIFEST), ("pull", OCI_MANIFEST)]

        def kinds(receiver: Receiver, count: int) -> list[tuple[str, str]]:
            events = receiver.wait_for(lambda got: len(got) >= count)
            return sorted((e["action"], e["target"]["mediaType"]) for e in events)

        assert kinds(no_pulls, 3) == sorted(everything[:3])
        assert kinds(no_blobs, 2) == sorted(everything[2:])
        assert kinds(no_oci, 2) == sorted(everything[:2])
        time.sleep(1)
        assert (len(no_pulls.events), len(no_blobs.events), len(no_oci.events)) == (3, 2, 2)
    finally:
        for receiver in (no_pulls, no_blobs, no_oci):
            receiver.stop()


def _push_images(server: RegistryProcess, repo: str, count: int) -> list[tuple[str, str, str | None]]:
    """`count` small images pushed one after another: (action, digest, tag) of every change, in push order."""
    changes: list[tuple[str, str, str | None]] = []
    for i in range(count):
        with httpx.Client(base_url=server.url, timeout=30) as client:  # a connection each: both workers serve
            config, layer = canonical({"image": i, "nonce": random_bytes(8).hex()}), random_bytes(300 + i)
            for blob in (config, layer):
                changes.append(("push", push_blob(client, repo, blob), None))
            document = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(OCI_CONFIG, config),
                "layers": [descriptor(OCI_LAYER_GZIP, layer)],
            }
            body = canonical(document)
            response = put_manifest(client, repo, f"t{i}", body, OCI_MANIFEST)
            assert response.status_code == 201, response.text
            changes.append(("push", sha256(body), f"t{i}"))
    return changes


def _worker_pids(server: RegistryProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+ ready \(pid (\d+)\)", server.log_path.read_text())]


def test_receiver_down_registry_killed_then_every_event_arrives_once_in_order(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    receiver = Receiver()  # its port is reserved, nothing listens yet: every delivery fails
    server = make_registry(extra_config=notifying(receiver, batch=4), workers=2)
    repo = unique_repo("outage")
    try:
        changes = _push_images(server, repo, 8)
        time.sleep(1)  # deliveries are failing meanwhile
        workers = _worker_pids(server)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers at once: no clean shutdown
        server.proc.wait()
        for pid in workers:
            _wait_gone(pid)
        server.proc = None
        server.start()
        changes += _push_images(server, repo, 2)
        receiver.start()
        events = receiver.wait_for(lambda got: len(got) >= len(changes), timeout=60)
        time.sleep(2)  # nothing more comes: no event twice
        events = receiver.events
        assert [(a, d, t) for a, _, d, t in summary(events)] == changes
        assert len({e["id"] for e in events}) == len(events)
        sizes = [len(delivery.body["events"]) for delivery in receiver.deliveries]
        assert max(sizes) == 4, sizes  # the backlog went out in envelopes of `batch` events
    finally:
        receiver.stop()


def test_an_endpoint_refusing_large_envelopes_gets_every_event_in_smaller_ones(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A receiver whose body limit is below `batch` events answers 413: the registry halves the envelope at once and
    keeps to that size, instead of sending the refused envelope again until `maxage` dropped its events."""
    receiver = Receiver(largest=5)  # nothing listens yet: the events wait, then go out as a backlog
    server = make_registry(extra_config=notifying(receiver, batch=16), workers=1)
    repo = unique_repo("body-limit")
    try:
        changes = _push_images(server, repo, 10)
        time.sleep(0.5)
        receiver.start()
        receiver.wait_for(lambda got: len(got) >= len(changes), timeout=30)
        time.sleep(1)  # nothing more comes: no event twice
        events = receiver.events
        assert [(a, d, t) for a, _, d, t in summary(events)] == changes
        assert len({e["id"] for e in events}) == len(events)
        # the envelope retried while the receiver was down holds what was waiting then; the rest of the backlog
        # goes in envelopes of `batch`: either way some were refused, each answered at once by one of half its size
        refused = receiver.refused
        assert refused, "no envelope was refused"
        assert all(size > 5 for size in refused), refused
        assert all(later == earlier // 2 for earlier, later in itertools.pairwise(refused)), refused
        largest = refused[-1] // 2
        assert max(len(d.body["events"]) for d in receiver.deliveries) <= largest
        assert f"refused as too large (413); sending at most {largest} at a time" in server.log_path.read_text()
    finally:
        receiver.stop()


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} survived SIGKILL")


def test_only_one_of_two_workers_delivers(make_registry: Callable[..., RegistryProcess], receiver: Receiver) -> None:
    server = make_registry(extra_config=notifying(receiver), workers=2)
    repo = unique_repo("one-deliverer")
    changes = _push_images(server, repo, 12)  # the connections land on both workers
    events = receiver.wait_for(lambda got: len(got) >= len(changes))
    time.sleep(1.5)
    assert [(a, d, t) for a, _, d, t in summary(receiver.events)] == changes
    deliverers = re.findall(r"\[(\d+)\] \S+ notifications: this process delivers events", server.log_path.read_text())
    assert len(deliverers) == 1, deliverers
    assert len({e["source"]["instanceID"] for e in events}) == 2, "both workers recorded events"
    assert len({e["id"] for e in events}) == len(events)
    assert len({e["request"]["id"] for e in events}) == len(events)


def test_an_endpoint_answering_500_does_not_slow_pushes(make_registry: Callable[..., RegistryProcess]) -> None:
    failing = Receiver(status=500).start()
    try:
        quiet = make_registry(workers=2)
        noisy = make_registry(workers=2, extra_config=notifying(failing, threshold=1, backoff="10ms", timeout="1s"))
        repo = unique_repo("slow")
        started = time.monotonic()
        _push_images(quiet, repo, 15)
        without = time.monotonic() - started
        started = time.monotonic()
        _push_images(noisy, repo, 15)
        with_failing = time.monotonic() - started
        assert failing.attempts > 0, "the failing endpoint was never tried"
        assert with_failing < 2 * without + 2.0, (without, with_failing)
        assert failing.deliveries == []
    finally:
        failing.stop()


def test_events_older_than_maxage_are_dropped_with_a_log_line(make_registry: Callable[..., RegistryProcess]) -> None:
    receiver = Receiver()
    config = notifying(receiver)
    config["notifications"]["events"]["maxage"] = "1s"
    server = make_registry(extra_config=config, workers=1)
    repo = unique_repo("stale")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            stale = push_blob(client, repo, b"nobody hears this one")
            time.sleep(2.5)
            receiver.start()
            fresh = push_blob(client, repo, b"this one arrives")
        receiver.wait_for(lambda got: len(got) >= 1)
        time.sleep(1)
        assert [e["target"]["digest"] for e in receiver.events] == [fresh]
        assert "dropped event" in server.log_path.read_text()
        assert stale not in str(receiver.events)
    finally:
        receiver.stop()


@pytest.mark.parametrize("answer", ["cut", "late"])
def test_a_200_whose_body_is_cut_or_late_is_delivered_once(
    make_registry: Callable[..., RegistryProcess], answer: str
) -> None:
    """The status line decides, as in Distribution: a receiver that took the envelope and answered 200 but whose
    body then broke off, or came after the endpoint's timeout, had it sent again and again (until `maxage`)."""
    receiver = Receiver(answer=answer, late_by=1.5).start()
    try:
        server = make_registry(extra_config=notifying(receiver, timeout="1s", backoff="200ms"))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push_blob(client, unique_repo("answered"), random_bytes(100))
        receiver.wait_for(lambda got: len(got) >= 1)
        time.sleep(3)  # several timeouts and backoffs: any repeat would have come
        assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


def test_a_clean_stop_lets_the_envelope_under_way_finish(make_registry: Callable[..., RegistryProcess]) -> None:
    """SIGTERM while an envelope is being delivered: the POST is let finish (within the endpoint's timeout) and
    its events counted as delivered, not cut off and sent again after the restart."""
    receiver = Receiver(hold=1.0).start()
    try:
        server = make_registry(extra_config=notifying(receiver, timeout="3s"))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push_blob(client, unique_repo("stopping"), random_bytes(100))
        receiver.wait_for(lambda got: len(got) >= 1)  # taken; the receiver answers a second later
        server.restart()
        time.sleep(3)  # the restarted deliverer has read the outbox by now
        assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


def test_a_clean_restart_keeps_pull_events_too(make_registry: Callable[..., RegistryProcess]) -> None:
    """Pull events wait in memory for up to a second; a clean stop writes them before the worker exits."""
    receiver = Receiver()
    server = make_registry(extra_config=notifying(receiver), workers=2)
    repo = unique_repo("restart")
    try:
        changes = _push_images(server, repo, 2)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(2):
                assert get_manifest(client, repo, f"t{i}").status_code == 200
        server.restart()  # SIGTERM at once: the pulls are still in the workers' memory
        receiver.start()
        expected = len(changes) + 2
        receiver.wait_for(lambda got: len(got) >= expected)
        time.sleep(1.5)
        events = receiver.events
        assert [(a, d, t) for a, _, d, t in summary(events) if a == "push"] == changes
        assert sorted(t or "" for a, _, _, t in summary(events) if a == "pull") == ["t0", "t1"]
        assert len(events) == expected
    finally:
        receiver.stop()


def test_queue_metrics_count_deliveries_and_failures(make_registry: Callable[..., RegistryProcess]) -> None:
    """The notification queue in Prometheus: one scrape of the debug listener shows what the delivering worker
    counted, per endpoint: acknowledged events for a receiver that takes them, failures for one answering 500."""
    good, failing = Receiver().start(), Receiver(status=500).start()
    try:
        debug_port = free_port()
        server = make_registry(
            workers=2,
            extra_config={
                "http": {"debug": {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}},
                "notifications": {
                    "endpoints": [
                        good.endpoint("good"),
                        failing.endpoint("failing", threshold=1, backoff="50ms", timeout="1s"),
                    ]
                },
            },
        )
        changes = _push_images(server, unique_repo("queue-metrics"), 2)
        _wait_for(lambda: len(good.events) >= len(changes) and failing.attempts >= 3)
        time.sleep(2.5)  # the counters reach the shared metrics once a second
        samples = scrape(debug_port)
        assert total(samples, "registry_notifications_delivered_total", endpoint="good") == len(good.events)
        assert total(samples, "registry_notifications_failures_total", endpoint="failing") >= 3
        assert total(samples, "registry_notifications_delivered_total", endpoint="failing") == 0
        assert total(samples, "registry_notifications_pending_events", endpoint="failing") >= 1
        assert total(samples, "registry_notifications_pending_events", endpoint="good") == 0
    finally:
        good.stop()
        failing.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_recorded_pull_events_leave_the_caches_warm_and_changes_still_show_at_once(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    """Pull events, delivery cursors and the delivery lease are written every second while pulls run; they change
    no registry data, so the per-process caches keep what they hold (a write per second emptying them would make
    every pull after it go to the database). A change of a tag still shows in the very next pull."""
    debug_port = free_port()
    metrics = {"debug": {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}}
    config = {**notifying(receiver), "http": metrics}
    server = make_registry(extra_config=config, workers=1)
    repo = unique_repo("warm")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first, second = image_manifest(client, repo, layers=1), image_manifest(client, repo, layers=1)
        push(client, repo, first, "v1")
        assert get_manifest(client, repo, "v1").status_code == 200  # fills the caches
        receiver.wait_for(lambda got: any(e["action"] == "pull" for e in got))  # its event was written and sent
        time.sleep(1.2)  # the cache tallies reach the metrics once a second
        misses_before = _cache_misses(debug_port)
        pulls = 0
        deadline = time.monotonic() + 3.5  # several flushes of pull events, and cursor writes after them
        while time.monotonic() < deadline:
            answer = get_manifest(client, repo, "v1")
            assert answer.status_code == 200
            assert answer.headers["Docker-Content-Digest"] == first.digest
            pulls += 1
            time.sleep(0.05)
        receiver.wait_for(lambda got: sum(e["action"] == "pull" for e in got) == pulls + 1)
        time.sleep(1.2)  # the cache tallies reach the metrics once a second
        assert _cache_misses(debug_port) == misses_before, "a pull event's write emptied the caches"

        push(client, repo, second, "v1")  # the tag moves: the next pull sees it, cached or not
        answer = get_manifest(client, repo, "v1")
        assert answer.headers["Docker-Content-Digest"] == second.digest


def _cache_misses(debug_port: int) -> float:
    samples = scrape(debug_port)
    return total(samples, "registry_cache_requests_total", cache="tags", result="miss") + total(
        samples, "registry_cache_requests_total", cache="manifests", result="miss"
    )


def test_a_batch_of_pull_events_given_in_part_resumes_after_a_restart_without_repeats(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A worker writes its pull events as one outbox row per batch; an endpoint taking one event per envelope is
    given such a row in several envelopes. Stopped in the middle of a row, the registry remembers how much of it
    went out: after the restart the rest of the row arrives, nothing twice and nothing lost."""
    receiver = Receiver(status=503).start()  # up, refusing everything until the test says otherwise
    server = make_registry(extra_config=notifying(receiver, batch=1, threshold=1, backoff="50ms"), workers=1)
    repo, pulls = unique_repo("pull-batch"), 60
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push(client, repo, image_manifest(client, repo, layers=1), "v1")  # 3 push events, one row each

            def pull(_: int) -> str:
                answer = get_manifest(client, repo, "v1")
                assert answer.status_code == 200
                return answer.headers["X-Request-Id"]

            with ThreadPoolExecutor(8) as pool:
                request_ids = set(pool.map(pull, range(pulls)))
        database = server.data_dir / "registry.db"
        _wait_for(lambda: sum(_outbox(database)) == 3 + pulls)
        sizes = _outbox(database)
        assert max(sizes) > 1, f"pull events were not batched: {sizes}"
        row = next(i for i, size in enumerate(sizes) if size > 1)
        receiver.limit, receiver.status = sum(sizes[:row]) + 2, 200  # ends two events into that row
        _wait_for(lambda: len(receiver.deliveries) == receiver.limit and receiver.attempts > receiver.limit)
        server.restart()  # a clean stop stores where the endpoint stands: inside the row
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT given FROM event_cursors").fetchone() == (2,)
        receiver.limit = None
        events = receiver.wait_for(lambda got: len(got) >= 3 + pulls)
        time.sleep(1.5)  # nothing more comes
        events = receiver.events
        assert len(events) == 3 + pulls
        assert len({e["id"] for e in events}) == len(events)
        assert {e["request"]["id"] for e in events if e["action"] == "pull"} == request_ids
        assert [e["action"] for e in events[:3]] == ["push"] * 3
    finally:
        receiver.stop()


def _outbox(database: Any) -> list[int]:
    """How many events each outbox row holds, in order."""
    with sqlite3.connect(database) as db:
        return [count for (count,) in db.execute("SELECT count FROM events ORDER BY id")]


def _failing_endpoint_registry(
    make_registry: Callable[..., RegistryProcess], failing: Receiver, backoff: str
) -> tuple[RegistryProcess, int]:
    """One worker, metrics on a debug port (returned), and `failing` as its one endpoint, retried every
    `backoff` after each failure."""
    debug_port = free_port()
    server = make_registry(
        workers=1,
        extra_config={
            "http": {"debug": {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}},
            "notifications": {"endpoints": [failing.endpoint("failing", threshold=1, backoff=backoff)]},
        },
    )
    return server, debug_port


def test_queue_depth_follows_events_recorded_while_an_endpoint_is_down(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """An endpoint down for hours: the queue depth stayed at what the deliverer read before its first failure, however
    many events came after, so an alert on it never fired."""
    failing = Receiver(status=500).start()
    server, debug_port = _failing_endpoint_registry(make_registry, failing, "200ms")
    repo = unique_repo("queue-grows")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push_blob(client, repo, random_bytes(16))
            _wait_for(lambda: failing.attempts >= 2)  # read, tried, failing
            for _ in range(12):
                push_blob(client, repo, random_bytes(16))
        _wait_for(lambda: total(scrape(debug_port), "registry_notifications_pending_events", endpoint="failing") == 13)
    finally:
        failing.stop()


def test_queue_depth_counts_every_event_of_batched_rows(make_registry: Callable[..., RegistryProcess]) -> None:
    """The queue depth counts events, not outbox rows: with more rows waiting than the deliverer reads at a time
    (100), a row beyond them holding a worker's batch of pull events counts every event in it."""
    failing = Receiver(status=500).start()
    server, debug_port = _failing_endpoint_registry(make_registry, failing, "1s")
    repo, blobs, pulls = unique_repo("queue-depth"), 110, 200
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push(client, repo, image_manifest(client, repo, layers=1), "v1")  # 3 push events
            for _ in range(blobs):  # a row each: more than the deliverer reads at a time
                push_blob(client, repo, random_bytes(16))

            def pull(_: int) -> None:
                assert get_manifest(client, repo, "v1").status_code == 200

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(pull, range(pulls)))
        server.restart()  # a clean stop writes the pulls; the deliverer starts reading with every row in place
        expected = 3 + blobs + pulls
        assert sum(_outbox(server.data_dir / "registry.db")) == expected

        def depth() -> float:
            return total(scrape(debug_port), "registry_notifications_pending_events", endpoint="failing")

        _wait_for(lambda: depth() == expected, timeout=30)
    finally:
        failing.stop()


def test_pull_events_a_moment_old_survive_sigkill(make_registry: Callable[..., RegistryProcess]) -> None:
    """What docs/notifications.md promises pull events: a SIGKILL loses at most a worker's last ~100 ms of them
    (`PULL_LOSS_WINDOW`). Pulls older than that are in the outbox: killed and restarted, the registry delivers every
    one."""
    receiver = Receiver()  # nothing listens yet: every delivery fails
    server = make_registry(extra_config=notifying(receiver, batch=50), workers=2)
    repo = unique_repo("pull-kill")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            push(client, repo, image_manifest(client, repo, layers=1), "v1")
        for _ in range(10):
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a connection each: both workers
                assert get_manifest(client, repo, "v1").status_code == 200
        time.sleep(PULL_LOSS_WINDOW + 0.5)
        workers = _worker_pids(server)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # no clean stop: nothing is flushed on the way out
        server.proc.wait()
        for pid in workers:
            _wait_gone(pid)
        server.proc = None
        server.start()
        receiver.start()
        receiver.wait_for(lambda got: len(got) >= 13)
        time.sleep(1.5)  # nothing more comes
        assert sorted(e["action"] for e in receiver.events) == ["pull"] * 10 + ["push"] * 3
    finally:
        receiver.stop()
