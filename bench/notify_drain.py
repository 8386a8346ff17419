"""The deliverer's CPU per pull event, draining a backlog (issue 13): `python3 bench/notify_drain.py [--events N]
[--rounds R] [--clients C] [--batch B]`.

Each round notes `N` pulls from `C` clients as a worker does (`Recorder.pulled`, flushed into a SQLite outbox as
the worker's flusher writes them), then starts a `Deliverer` and counts this process's CPU (every thread) until a
counting receiver in another process has every event: reading the rows, making each event's JSON, the envelopes
of up to `B` events and their POSTs (and the lease and cursor look-ups it starts with). Beside it only a look at
the receiver's count every 50 ms runs (well under 0.1 µs per event), so the figure is the deliverer's own cost per
event, the part of a pulled GET's cost that `notify_attribution.py` shows as "delivery" (there under contention with
the load, here alone). Another tree's code is measured by putting its `src` and `core/src` first on
`PYTHONPATH`; alternate the two, the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from notify_pipeline import MANIFEST, outbox, pull_requests, received, start_receiver

from docker_registry.core.digest import Digest
from docker_registry.server.http.context import SERVING
from docker_registry.server.http.requestid import KEY as REQUEST_ID
from docker_registry.server.notifications.delivery import Deliverer
from docker_registry.server.notifications.recorder import ROW_EVENTS, Recorder
from docker_registry.server.notifications.stats import Stats
from docker_registry.server.registry.events import pulled_target


async def _drain(root: Path, port: int, args: argparse.Namespace) -> float:
    """CPU seconds the deliverer took to send `args.events` noted pulls."""
    config, _, store = outbox(root, port, args.batch)
    requests = pull_requests(args.clients)
    stats = Stats.of(["bench"])
    recorder = Recorder(config.notifications, 5000, store, stats)
    target = pulled_target("manifest", "bench/small", Digest("sha256", "ab" * 32), MANIFEST, 525, "latest")
    for number in range(args.events):
        request = requests[number % len(requests)]
        request[REQUEST_ID] = f"bench-{number:06x}"
        SERVING.set(request)
        recorder.pulled(target)
        if number % ROW_EVENTS == ROW_EVENTS - 1:
            await recorder.flush()
    await recorder.flush()
    before = received(port)
    deliverer = Deliverer(config.notifications, store.sync, stats)
    cpu = time.process_time()
    deliverer.start()
    try:
        while received(port) - before < args.events:
            await asyncio.sleep(0.05)
        return time.process_time() - cpu
    finally:
        await deliverer.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64, help="connections the pulls come from (wrk's 64)")
    parser.add_argument("--batch", type=int, default=100, help="the endpoint's `batch` (events per envelope)")
    args = parser.parse_args()
    receiver, port = start_receiver()
    try:
        figures = []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as root:
                figures.append(asyncio.run(_drain(Path(root), port, args)) / args.events * 1e6)
            print(f"round {r + 1}: {figures[-1]:.2f} µs of CPU per event", flush=True)
        print(f"median: {statistics.median(figures):.2f} µs per event ({args.events:,} events, batch {args.batch})")
    finally:
        receiver.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
