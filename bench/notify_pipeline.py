"""CPU per pull event of the notifications pipeline alone (issue 13), without HTTP load around it: one process
notes pulls as a worker does (`Recorder.pulled`, with the target a manifest GET makes), its flusher writes them to
a SQLite outbox, its deliverer reads, expands and POSTs them to a counting receiver in another process. The same
paced loop runs without notifications for the baseline; the difference in this process's CPU (every thread), per
event, is what a pull event costs a worker. Far steadier on a shared machine than whole-server figures (CPU time,
not wall time, and no load generator competing).

    python3 bench/notify_pipeline.py [--events 60000] [--rate 8000] [--clients 32] [--batch 100] [--rounds 3]
        [--flush-seconds S[,S2]]

`--rate` is pulls per second noted by this process (one worker's share of the bench's load), `--clients` the
connections they come from (each a client of its own, as its address differs). `--flush-seconds` sets the
recorder's `FLUSH_SECONDS`; two values, comma-separated, measure both in each round (interleaved).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import servers
import sqlalchemy as sa
from aiohttp.test_utils import make_mocked_request

from docker_registry.core.digest import Digest
from docker_registry.server.config.schema import Config
from docker_registry.server.http.context import SERVING
from docker_registry.server.http.requestid import KEY as REQUEST_ID
from docker_registry.server.notifications import recorder as recording
from docker_registry.server.notifications.delivery import Deliverer
from docker_registry.server.notifications.recorder import Recorder
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.registry.events import Target
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine, database_url
from docker_registry.server.store.facade import AsyncMetadataStore
from docker_registry.server.store.metadata import MetadataStore

RECEIVER = """
import sys
from aiohttp import web
count = posts = size = 0
async def events(request):
    global count, posts, size
    body = await request.read()
    count += body.count(b'"action":')
    posts += 1
    size += len(body)
    return web.Response()
async def total(request):
    return web.Response(text=str(count))
async def stats(request):
    return web.Response(text=f"{count} {posts} {size}")
app = web.Application()
app.router.add_post("/events", events)
app.router.add_get("/count", total)
app.router.add_get("/stats", stats)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class _Transport:
    """What the recorder asks a request's connection: its peer."""

    def __init__(self, port: int) -> None:
        self._peer = ("127.0.0.1", port)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def received(port: int) -> int:
    """The events the receiver on `port` counted so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count") as answer:
        return int(answer.read())


def start_receiver() -> tuple[subprocess.Popen[bytes], int]:
    """The counting receiver (`RECEIVER`) in a process of its own, answering, and its port."""
    port = servers.free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    deadline = time.monotonic() + 20
    while True:
        try:
            received(port)
            return receiver, port
        except OSError:
            if time.monotonic() > deadline:
                receiver.terminate()
                raise
            time.sleep(0.1)


def outbox(root: Path, port: int, batch: int) -> tuple[Config, sa.Engine, AsyncMetadataStore]:
    """A configuration with one endpoint, the receiver on `port` taking envelopes of up to `batch` events, and its
    SQLite metadata store under `root`, migrated (its engine apart, for counting statements)."""
    config = Config.model_validate(
        {
            "version": 0.1,
            "storage": {"filesystem": {"rootdirectory": str(root)}},
            "notifications": {
                "endpoints": [{"name": "bench", "url": f"http://127.0.0.1:{port}/events", "batch": batch}]
            },
        }
    )
    engine = create_engine(database_url(config))
    migrate.upgrade(engine)
    return config, engine, AsyncMetadataStore(MetadataStore(engine))


def pull_requests(clients: int) -> list[Any]:
    """A manifest GET from each of `clients` connections (each a peer of its own, so a client of its own)."""
    headers = {"User-Agent": "wrk", "Accept": MANIFEST, "Host": "127.0.0.1:5000"}
    return [
        make_mocked_request("GET", "/v2/bench/small/manifests/latest", headers=headers, transport=_Transport(40000 + n))
        for n in range(clients)
    ]


def _stats(port: int) -> tuple[int, int, int]:
    """The receiver's events, POSTs and bytes of bodies so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats") as answer:
        events, posts, size = (int(word) for word in answer.read().split())
    return events, posts, size


async def _paced(requests: list[Any], events: int, rate: int, recorder: Recorder | None) -> None:
    """`events` pulls at `rate` a second in ticks of 10 ms, each with a request id of its own (set in both runs:
    a server makes one per request anyway)."""
    digest = Digest("sha256", "ab" * 32)
    per_tick = max(rate // 100, 1)
    started = time.monotonic()
    done = 0
    while done < events:
        for _ in range(min(per_tick, events - done)):
            request = requests[done % len(requests)]
            request[REQUEST_ID] = f"bench-{done:06x}"
            if recorder is not None:
                SERVING.set(request)
                recorder.pulled(Target("manifest", "bench/small", digest, MANIFEST, 525, "latest"))
            done += 1
        await asyncio.sleep(max(started + done / rate - time.monotonic(), 0))


async def _run(root: Path, port: int, args: argparse.Namespace, notify: bool) -> tuple[float, int]:
    """CPU seconds of one paced run, until the receiver counted every event (with notifications), and the database
    statements it ran (migrations excepted)."""
    config, engine, store = outbox(root, port, args.batch)
    statements = [0]
    sa.event.listen(engine, "before_cursor_execute", lambda *_: statements.__setitem__(0, statements[0] + 1))
    requests = pull_requests(args.clients)
    stats = Stats.of(["bench"])
    recorder = deliverer = None
    if notify:
        recorder = Recorder(config.notifications, 5000, store, stats)
        deliverer = Deliverer(config.notifications, store.sync, stats)
        recorder.start()
        deliverer.start()
    before = received(port)
    cpu = time.process_time()
    try:
        await _paced(requests, args.events, args.rate, recorder)
        while notify and received(port) - before < args.events:
            await asyncio.sleep(0.05)
        return time.process_time() - cpu, statements[0]
    finally:
        if deliverer is not None:
            await deliverer.stop()
        if recorder is not None:
            await recorder.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=8_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flush-seconds", default=str(recording.FLUSH_SECONDS))
    args = parser.parse_args()
    flushes = [float(value) for value in args.flush_seconds.split(",")]
    receiver, port = start_receiver()
    try:
        costs: dict[float, list[float]] = {flush: [] for flush in flushes}
        for r in range(args.rounds):
            for flush in flushes:
                recording.FLUSH_SECONDS = flush
                with tempfile.TemporaryDirectory(prefix="notify-pipeline-") as tmp:
                    for name in ("off", "on"):
                        (Path(tmp) / name).mkdir()
                    off, _ = asyncio.run(_run(Path(tmp) / "off", port, args, notify=False))
                    before = _stats(port)
                    on, statements = asyncio.run(_run(Path(tmp) / "on", port, args, notify=True))
                    events, posts, size = (now - then for now, then in zip(_stats(port), before, strict=True))
                costs[flush].append((on - off) * 1e6 / args.events)
                print(
                    f"round {r + 1}, flush every {flush:g} s: baseline {off:.2f} s, notifications {on:.2f} s of CPU: "
                    f"{costs[flush][-1]:.1f} µs per pull; per event {statements / events:.4f} database statements, "
                    f"{posts / events:.4f} POSTs, {size / events:.0f} bytes of JSON sent",
                    flush=True,
                )
        for flush, values in costs.items():
            print(
                f"CPU per pull event, flush every {flush:g} s: median {statistics.median(values):.1f} µs "
                f"({min(values):.1f}-{max(values):.1f}; {args.events:,} pulls at {args.rate:,}/s from {args.clients} "
                f"clients, envelopes of up to {args.batch})"
            )
    finally:
        receiver.terminate()
        receiver.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
