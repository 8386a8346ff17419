"""The recorder's pull notes when the database refuses a batch: the notes are kept, in order, and when the
numbering of (target, client) combinations starts afresh meanwhile, each kept note still names what it was (the
error path a running registry reaches only with the database down and thousands of clients)."""

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
from docker_registry.server.registry.events import Target
from docker_registry.server.store.models import EventRecord

OCI = "application/vnd.oci.image.manifest.v1+json"


class _Outbox:
    """Refuses the second write (the database down), keeps the rows of the others."""

    def __init__(self) -> None:
        self.writes = 0
        self.rows: list[EventRecord] = []

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        self.writes += 1
        if self.writes == 2:
            raise OSError("database unavailable")
        self.rows += records


class _Connection:
    def __init__(self, port: int) -> None:
        self._peer = ("10.0.0.9", port)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def test_notes_kept_through_a_refused_write_and_a_fresh_numbering_keep_their_target_and_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recording, "MAX_COMBINATIONS", 2)
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/"}]})
    outbox = _Outbox()
    recorder = Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]
    # (repository, user agent, client port) of each pull; a flush after the 2nd (written) and the 5th (refused)
    pulls = [("a", "one", 4000), ("b", "two", 4001), ("c", "one", 4001), ("d", "three", 4000), ("b", "two", 4001)]
    pulls += [("a", "one", 4000)]
    for n, (repository, agent, port) in enumerate(pulls):
        request = make_mocked_request(
            "GET", f"/v2/{repository}/manifests/t", headers={"User-Agent": agent}, transport=_Connection(port)
        )
        token = SERVING.set(request)
        try:
            recorder.pulled(Target("manifest", repository, Digest("sha256", "ab" * 32), OCI, 9, "t"))
        finally:
            SERVING.reset(token)
        if n == 1:
            await recorder.flush()  # written; 2 combinations numbered, as many as kept
        if n == 4:  # refused: the three notes wait, 4 combinations known, so those 3 are numbered afresh
            with pytest.raises(OSError, match="database unavailable"):
                await recorder.flush()

    await recorder.flush()

    events = [json.loads(text) for row in outbox.rows for text in expand(row.payload)]
    got = [(e["target"]["repository"], e["request"]["useragent"], e["request"]["addr"]) for e in events]
    assert got == [(repository, agent, f"10.0.0.9:{port}") for repository, agent, port in pulls]
    assert sum(row.count for row in outbox.rows) == 6
