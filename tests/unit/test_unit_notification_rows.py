"""The compact outbox row of a worker's pull events (`Events.pull_row`) and its expansion into Distribution's
event JSON when delivered (`expand`), including rows in the format written before (they may wait in an outbox
while the registry is upgraded)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from docker_registry.core.digest import Digest
from docker_registry.server.notifications.delivery import Batch
from docker_registry.server.notifications.envelope import Client, Events, expand, row_events
from docker_registry.server.registry.events import Target
from docker_registry.server.store.models import Cursor, StoredEvent

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


def test_any_slice_of_a_pull_row_gives_the_same_events_as_the_whole_row() -> None:
    """The deliverer reads a row a slice at a time (an envelope, the rest of a row after its cursor): each event
    must be the one at its place, with its own id, time, client and request, wherever the slice starts."""
    targets = [Target("manifest", f"team/app{n}", DIGEST, OCI, 512 + n, "v1") for n in range(3)]
    clients = [Client(f"10.0.0.{n}:4000", "registry:5000", "GET", "docker/26", None, "http://r:5000") for n in range(4)]
    combinations = [(target, client) for target in targets for client in clients]
    start = 1_764_929_998.5
    notes = [(start + n * 0.013_7, (n * 7) % len(combinations), f"req-{n}") for n in range(300)]
    events = Events({"addr": "node:5000", "instanceID": "one"}, include_references=False)
    row = events.pull_row(notes, combinations.__getitem__)
    whole = expand(row)
    lazy = row_events(row)

    assert len(lazy) == 300
    for window in (slice(0, 100), slice(100, 200), slice(17, 18), slice(250, 400), slice(5, 290, 7), slice(-40, None)):
        assert lazy[window] == whole[window]
    assert lazy[::-3] == whole[::-3]
    assert lazy[10:0:-1] == whole[10:0:-1]
    assert [lazy[n] for n in (0, 1, 299, -1)] == [whole[n] for n in (0, 1, 299, -1)]
    parsed = [json.loads(text) for text in whole]
    assert [e["request"]["id"] for e in parsed] == [f"req-{n}" for n in range(300)]
    for event, (when, number, _) in zip(parsed, notes, strict=True):
        target, client = combinations[number]
        assert (event["target"]["repository"], event["request"]["addr"]) == (target.repository, client.addr)
        micros = int(when * 1_000_000)
        second = datetime.fromtimestamp(micros // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert event["timestamp"] == f"{second}.{micros % 1_000_000:06d}000Z"
    prefix, first = row.split("\n")[0][1:].split("\t")[:2]
    assert [e["id"] for e in parsed] == [f"{prefix}{int(first) + n:012x}" for n in range(300)]
    # one event's text in full, written out here (the deliverer sends the stored texts as they are)
    assert lazy[3] == (
        f'{{"id":"{prefix}{int(first) + 3:012x}","timestamp":"2025-12-05T10:19:58.541100000Z","action":"pull",'
        '"target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":514,"digest":"sha256:'
        + "ab" * 32
        + '","length":514,"repository":"team/app2","url":"http://r:5000/v2/team/app2/manifests/sha256:'
        + "ab" * 32
        + '","tag":"v1"},"request":{"id":"req-3","addr":"10.0.0.1:4000","host":"registry:5000","method":"GET",'
        '"useragent":"docker/26"},"actor":{},"source":{"addr":"node:5000","instanceID":"one"}}'
    )


def test_a_pull_row_whose_columns_disagree_is_refused_not_cut_short() -> None:
    """A damaged row (a column short of values) is an error the deliverer reports and retries, not fewer events:
    an envelope cut short would leave the cursor unable to pass the row."""
    events = Events({"addr": "node:5000", "instanceID": "one"}, include_references=False)
    target = Target("manifest", "team/app", DIGEST, OCI, 512, "v1")
    client = Client("10.0.0.1:4000", "registry:5000", "GET", "docker/26", None, "http://r:5000")
    header, times, numbers, request_ids = events.pull_row(
        [(1.0, 0, "a"), (2.0, 0, "b")], [(target, client)].__getitem__
    ).split("\n")

    with pytest.raises(ValueError, match="columns"):
        row_events("\n".join((header, times, numbers, request_ids + "\tc")))
    with pytest.raises(ValueError, match="columns"):
        row_events("\n".join((header, times, numbers + ",0", request_ids)))


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


def test_a_cursor_within_a_row_pruned_since_gives_nothing_of_the_next_row() -> None:
    """An endpoint disabled (or removed) while stopped within a row of pull events: the row was pruned once every
    enabled endpoint had it, and once the endpoint was back the cursor's count of events given was applied to the
    next row, whose first events it then never sent."""
    lines = "\n".join(f'{{"id":"{n}"}}' for n in range(10))
    later = StoredEvent(id=9, created_at=0.0, payload=lines)
    assert len(Batch([later], Cursor(4, 3))) == 10  # row 5 is gone: all of row 9 is still to give
    within = StoredEvent(id=5, created_at=0.0, payload=lines)
    assert list(Batch([within], Cursor(4, 3))) == [f'{{"id":"{n}"}}' for n in range(3, 10)]
