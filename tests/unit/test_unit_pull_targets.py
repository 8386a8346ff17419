"""The pull path's shortcuts: a pull target made as a plain tuple is the same target the named tuple's constructor
makes (same event text, same key in the recorder's tables), and whether pulls are wanted is decided per media type
as the endpoints' rules say."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from docker_registry.core.digest import Digest
from docker_registry.server.config.notifications import NotificationsConfig
from docker_registry.server.http.context import SERVING
from docker_registry.server.notifications import recorder as recording
from docker_registry.server.notifications.envelope import expand
from docker_registry.server.notifications.recorder import Recorder
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.registry.events import BLOB_MEDIA_TYPE, Target, pulled_target
from docker_registry.server.store.models import EventRecord

OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
DIGEST = Digest("sha256", "cd" * 32)


def test_a_pulled_target_equals_the_named_tuples_own() -> None:
    made = pulled_target("manifest", "a/b", DIGEST, OCI, 525, "latest")
    assert made == Target("manifest", "a/b", DIGEST, OCI, 525, "latest")
    assert hash(made) == hash(Target("manifest", "a/b", DIGEST, OCI, 525, "latest"))
    assert type(made) is Target
    assert (made.kind, made.repository, made.digest, made.media_type, made.size, made.tag) == (
        "manifest",
        "a/b",
        DIGEST,
        OCI,
        525,
        "latest",
    )
    assert made.from_repository is None
    assert made.references == ()
    blob = pulled_target("blob", "a/b", DIGEST, BLOB_MEDIA_TYPE, 7, None)
    assert blob == Target("blob", "a/b", DIGEST, BLOB_MEDIA_TYPE, 7)


class _Outbox:
    def __init__(self) -> None:
        self.rows: list[EventRecord] = []

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        self.rows += records


class _Connection:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.7", 4100) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def test_pulls_are_noted_only_for_media_types_some_endpoint_takes_and_never_for_head() -> None:
    settings = NotificationsConfig.model_validate(
        {"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/", "ignore": {"mediatypes": [DOCKER]}}]}
    )
    outbox = _Outbox()
    recorder = Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]
    pulls = [("GET", OCI, 1), ("GET", DOCKER, 2), ("HEAD", OCI, 3), ("GET", OCI, 4), ("GET", DOCKER, 5)]
    for method, media_type, size in pulls:
        request = make_mocked_request(
            method, "/v2/a/b/manifests/latest", headers={"Host": "127.0.0.1:5000"}, transport=_Connection()
        )
        token = SERVING.set(request)
        try:
            recorder.pulled(pulled_target("manifest", "a/b", DIGEST, media_type, size, "latest"))
        finally:
            SERVING.reset(token)
    await recorder.flush()

    events = [json.loads(text) for row in outbox.rows for text in expand(row.payload)]
    assert [(e["target"]["mediaType"], e["target"]["size"]) for e in events] == [(OCI, 1), (OCI, 4)]
    assert {e["target"]["url"] for e in events} == {f"http://127.0.0.1:5000/v2/a/b/manifests/{DIGEST}"}


async def test_a_connection_pulling_again_after_a_fresh_numbering_still_names_what_it_pulled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pulls on one connection are recognised by comparing with its previous pull; when the combinations are
    numbered afresh (more than `MAX_COMBINATIONS`), what a connection remembered must not name a stale number."""
    monkeypatch.setattr(recording, "MAX_COMBINATIONS", 1)
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/"}]})
    outbox = _Outbox()
    recorder = Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]
    connection = _Connection()
    order = ["a/one", "a/one", "b/two", "a/one", "b/two", "b/two", "a/one"]
    for n, repository in enumerate(order):
        request = make_mocked_request(
            "GET", f"/v2/{repository}/manifests/t", headers={"Host": "127.0.0.1:5000"}, transport=connection
        )
        token = SERVING.set(request)
        try:
            recorder.pulled(pulled_target("manifest", repository, DIGEST, OCI, 9, "t"))
        finally:
            SERVING.reset(token)
        if n in (2, 4):  # two combinations known, one allowed: numbered afresh after each of these flushes
            await recorder.flush()
    await recorder.flush()

    events = [json.loads(text) for row in outbox.rows for text in expand(row.payload)]
    assert [e["target"]["repository"] for e in events] == order


async def test_pulls_on_one_connection_with_other_headers_or_methods_are_other_clients() -> None:
    """A connection's previous pull is reused only for the same headers (they carry the user), target and method."""
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/"}]})
    outbox = _Outbox()
    recorder = Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]
    connection = _Connection()
    agents = ["one", "two", "two", "one"]
    for agent in agents:
        request = make_mocked_request(
            "GET", "/v2/a/manifests/t", headers={"Host": "127.0.0.1:5000", "User-Agent": agent}, transport=connection
        )
        token = SERVING.set(request)
        try:
            recorder.pulled(pulled_target("manifest", "a", DIGEST, OCI, 9, "t"))
        finally:
            SERVING.reset(token)
    await recorder.flush()

    events = [json.loads(text) for row in outbox.rows for text in expand(row.payload)]
    assert [e["request"]["useragent"] for e in events] == agents
