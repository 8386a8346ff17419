"""The compact outbox row of a worker's pull events (`Events.pull_row`) and its expansion into Distribution's
event JSON when delivered (`expand`), including rows in the format written before (they may wait in an outbox
while the registry is upgraded)."""

from __future__ import annotations

import json

from docker_registry.core.digest import Digest
from docker_registry.server.notifications.envelope import Client, Events, expand
from docker_registry.server.registry.events import Target

DIGEST = Digest("sha256", "ab" * 32)
OCI = "application/vnd.oci.image.manifest.v1+json"


def test_a_pull_row_expands_into_each_noted_event_with_its_time_request_and_client() -> None:
    first = Target("manifest", "team/app", DIGEST, OCI, 512, "v1")
    second = Target("manifest", "team/app", DIGEST, OCI, 512)
    alice = Client("10.0.0.1:4000", "registry:5000", "GET", "docker/26", "alice", "https://registry:5000")
    bob = Client("10.0.0.2:4001", "registry:5000", "GET", "podman\t5", None, "https://registry:5000")
    combinations = [(first, alice), (second, bob)]
    start = 1_764_929_999.999_990  # the notes span a second's turn
    notes = [(start, 0, "req-1"), (start + 0.000_011, 1, "req-2"), (start + 0.5, 0, "req-3")]
    events = Events({"addr": "node:5000", "instanceID": "one"}, include_references=False)

    parsed = [json.loads(text) for text in expand(events.pull_row(notes, combinations.__getitem__))]

    assert [e["timestamp"] for e in parsed] == [
        "2025-12-05T10:19:59.999990000Z",
        "2025-12-05T10:20:00.000001000Z",
        "2025-12-05T10:20:00.499990000Z",
    ]
    assert [e["request"]["id"] for e in parsed] == ["req-1", "req-2", "req-3"]
    assert len({e["id"] for e in parsed}) == 3
    assert {e["action"] for e in parsed} == {"pull"}
    assert parsed[0]["target"] == {
        "mediaType": OCI,
        "size": 512,
        "digest": str(DIGEST),
        "length": 512,
        "repository": "team/app",
        "url": f"https://registry:5000/v2/team/app/manifests/{DIGEST}",
        "tag": "v1",
    }
    assert "tag" not in parsed[1]["target"]
    assert parsed[0]["actor"] == {"name": "alice"}
    assert parsed[1]["actor"] == {}
    assert parsed[1]["request"] == {
        "id": "req-2",
        "addr": "10.0.0.2:4001",
        "host": "registry:5000",
        "method": "GET",
        "useragent": "podman\t5",
    }
    assert parsed[2]["source"] == {"addr": "node:5000", "instanceID": "one"}
    # the ids of the next batch follow on: none repeats
    again = expand(events.pull_row(notes[:1], combinations.__getitem__))
    assert json.loads(again[0])["id"] not in {e["id"] for e in parsed}


def test_a_pull_row_in_the_format_written_before_still_expands() -> None:
    shared = [
        '","action":"pull","target":{"repository":"a/b","tag":"t"},"request":{"id":"',
        '","method":"GET","useragent":"x"},"actor":{},"source":{"addr":"n:1"}}',
    ]
    row = (
        "P"
        + json.dumps(shared)
        + "\nid-1\t2026-12-01T10:00:00.000001000Z\t0\tr-1\nid-2\t2026-12-01T10:00:01.5Z\t0\tr-2"
    )

    parsed = [json.loads(text) for text in expand(row)]

    assert [(e["id"], e["timestamp"], e["request"]["id"]) for e in parsed] == [
        ("id-1", "2026-12-01T10:00:00.000001000Z", "r-1"),
        ("id-2", "2026-12-01T10:00:01.5Z", "r-2"),
    ]
    assert parsed[1]["target"] == {"repository": "a/b", "tag": "t"}


def test_a_pull_row_with_a_line_per_event_as_written_before_still_expands() -> None:
    shared = [
        '","action":"pull","target":{"repository":"a/b","tag":"t"},"request":{"id":"',
        '","method":"GET","useragent":"x"},"actor":{},"source":{"addr":"n:1"}}',
    ]
    row = "Qp-\t7\t1764929999999990\t" + json.dumps(shared) + "\n0\t0\tr-1\n1500010\t0\tr-2"

    parsed = [json.loads(text) for text in expand(row)]

    assert [(e["id"], e["timestamp"], e["request"]["id"]) for e in parsed] == [
        ("p-000000000007", "2025-12-05T10:19:59.999990000Z", "r-1"),
        ("p-000000000008", "2025-12-05T10:20:01.500000000Z", "r-2"),
    ]
    assert parsed[1]["target"] == {"repository": "a/b", "tag": "t"}


def test_a_row_of_json_events_expands_into_its_lines() -> None:
    assert expand('{"id":"1"}\n{"id":"2"}') == ['{"id":"1"}', '{"id":"2"}']
