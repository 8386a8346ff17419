"""The recorder's pull flush: notes wait in memory up to `FLUSH_SECONDS` (the loss window of a SIGKILL, see
docs/notifications.md), and once `ROW_EVENTS` wait they are written at once, in one transaction (one
`record_events`) of rows of up to `ROW_EVENTS`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from docker_registry.core.digest import Digest
from docker_registry.server.config.notifications import NotificationsConfig
from docker_registry.server.http.context import SERVING
from docker_registry.server.notifications import recorder as recording
from docker_registry.server.notifications.recorder import FLUSH_SECONDS, ROW_EVENTS, Recorder
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.registry.events import Target
from docker_registry.server.store.models import EventRecord

OCI = "application/vnd.oci.image.manifest.v1+json"


class _Outbox:
    def __init__(self) -> None:
        self.writes: list[tuple[float, list[int]]] = []
        """Per `record_events`: when, and the events of each row."""

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        self.writes.append((time.monotonic(), [record.count for record in records]))


class _Connection:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.9", 4000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def _pull(recorder: Recorder, count: int) -> None:
    request = make_mocked_request("GET", "/v2/a/manifests/t", transport=_Connection())
    target = Target("manifest", "a", Digest("sha256", "ab" * 32), OCI, 9, "t")
    token = SERVING.set(request)
    try:
        for _ in range(count):
            recorder.pulled(target)
    finally:
        SERVING.reset(token)


def _recorder(outbox: _Outbox) -> Recorder:
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/"}]})
    return Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]


async def test_a_pull_waits_the_flush_window_then_is_written() -> None:
    outbox = _Outbox()
    recorder = _recorder(outbox)
    recorder.start()
    try:
        await asyncio.sleep(0)
        started = time.monotonic()
        _pull(recorder, 3)
        await asyncio.sleep(FLUSH_SECONDS / 2)
        assert outbox.writes == []  # still in memory: this is the window a SIGKILL may lose
        await asyncio.sleep(FLUSH_SECONDS)
        assert [rows for _, rows in outbox.writes] == [[3]]
        assert outbox.writes[0][0] - started >= FLUSH_SECONDS * 0.9
    finally:
        await recorder.stop()


async def test_a_full_batch_is_written_at_once_in_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "FLUSH_SECONDS", 600.0)  # only the notes can wake it (however slow the machine)
    outbox = _Outbox()
    recorder = _recorder(outbox)
    recorder.start()
    try:
        await asyncio.sleep(0)
        for _ in range(ROW_EVENTS // 500):  # as requests come: a few hundred per turn of the loop
            _pull(recorder, 500)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        for _ in range(1000):  # woken by the notes, not by its timer
            await asyncio.sleep(0.01)
            if outbox.writes:
                break
        assert outbox.writes
        rows = outbox.writes[0][1]
        assert len(outbox.writes) == 1, outbox.writes  # one transaction, not one per row
        assert rows == [ROW_EVENTS]
        _pull(recorder, 5)
    finally:
        await recorder.stop()
    assert [rows for _, rows in outbox.writes[1:]] == [[5]]  # the stop wrote what came after
