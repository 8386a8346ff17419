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
from docker_registry.server.notifications import recorder as recording
from docker_registry.server.notifications.envelope import expand
from docker_registry.server.notifications.recorder import Recorder
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.registry.events import Target
from docker_registry.server.store.models import EventRecord

OCI = "application/vnd.oci.image.manifest.v1+json"


class _Outbox:
    """Refuses the first write (the database down), keeps the rows of the next ones."""

    def __init__(self) -> None:
        self.refuse = True
        self.rows: list[EventRecord] = []

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        if self.refuse:
            self.refuse = False
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
    monkeypatch.setattr(recording, "MAX_COMBINATIONS", 1)
    settings = NotificationsConfig.model_validate({"endpoints": [{"name": "e", "url": "http://127.0.0.1:1/"}]})
    outbox = _Outbox()
    recorder = Recorder(settings, 5000, outbox, Stats.of(["e"]))  # type: ignore[arg-type]
    pulls = []
    for n in range(6):
        request = make_mocked_request(
            "GET", "/v2/x/manifests/t", headers={"User-Agent": f"agent-{n % 3}"}, transport=_Connection(4000 + n % 2)
        )
        token = recording._request.set(request)
        try:
            recorder.pulled(Target("manifest", f"repo{n % 2}", Digest("sha256", f"{n % 2}" * 64), OCI, 9, "t"))
        finally:
            recording._request.reset(token)
        pulls.append((f"repo{n % 2}", f"agent-{n % 3}", f"10.0.0.9:{4000 + n % 2}"))
        if n == 2:
            with pytest.raises(OSError, match="database unavailable"):
                await recorder.flush()  # refused: the three notes wait, numbered afresh (more than 1 combination)

    await recorder.flush()

    events = [json.loads(text) for row in outbox.rows for text in expand(row.payload)]
    assert [(e["target"]["repository"], e["request"]["useragent"], e["request"]["addr"]) for e in events] == pulls
    assert sum(row.count for row in outbox.rows) == 6
