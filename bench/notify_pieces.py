"""Where a pulled GET's extra CPU goes in the workers (issue 13): each piece that notifications and metrics add to a
request, timed in place with a thread-CPU clock in both workers of a server with an endpoint and metrics on, under
the bench's manifest GET load. Profilers mislead here: callgrind runs a worker at some 100 GETs a second, so a
flush (every 100 ms) carries a few notes instead of the benchmark's ~1,000 and its fixed cost looks like a
per-request one; py-spy samples are too few per piece. See `bench/README.md`, notifications, events8.

    python3 bench/notify_pieces.py [--rounds 3] [--seconds 8] [--connections 64]

Per round and piece: µs of thread CPU per GET, calls, µs per call. Each wrapped call includes the wrapper itself
(printed, measured in a loop: about 0.4 µs on a loaded machine). `request_id` is timed inside `Recorder.pulled`,
where a pulled GET first asks for it: off makes the same id in `on_prepare`, so it is no cost of notifications.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import images
import loadgen
import servers
from notifications import CountingReceiver, metrics_on, serving_cpu_seconds, settle

PIECES_ENV = "BENCH_NOTIFY_PIECES"
"""The folder each worker writes its totals to (`<pid>.json`, every second); set only for the measured server."""
SITE = f'''import os
if os.environ.get("{PIECES_ENV}"):
    import notify_pieces
    os.register_at_fork(after_in_child=notify_pieces.instrument)
'''
"""The `sitecustomize` put on the server's `PYTHONPATH`: a forked worker wraps the pieces before it serves."""


def _wrap(owner: Any, name: str, slot: list[int]) -> None:
    original = getattr(owner, name)
    clock = time.thread_time_ns

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            slot[0] += clock() - started
            slot[1] += 1

    setattr(owner, name, timed)  # on a class, a plain function: called from the class, it binds nothing


def instrument() -> None:
    """In a forked worker: wrap the pieces, and write their totals every second."""
    import threading

    from docker_registry.server.metrics.flushing import FlushedTogether
    from docker_registry.server.metrics.requests import RequestMetrics
    from docker_registry.server.notifications import envelope
    from docker_registry.server.notifications import recorder as recording
    from docker_registry.server.registry import service

    totals: dict[str, list[int]] = {}

    def slot(label: str) -> list[int]:
        return totals.setdefault(label, [0, 0])

    class Functions:  # module functions, wrapped as attributes and put back where they are looked up
        request_id_of = staticmethod(recording.request_id_of)
        pulled_target = staticmethod(service.pulled_target)
        empty = staticmethod(lambda: None)

    _wrap(recording.Recorder, "pulled", slot("Recorder.pulled"))
    _wrap(Functions, "request_id_of", slot("  request_id, inside pulled"))
    _wrap(Functions, "pulled_target", slot("pulled_target"))
    _wrap(RequestMetrics, "observe", slot("request metrics observer"))
    _wrap(envelope.Events, "pull_row", slot("Events.pull_row (flush)"))
    _wrap(FlushedTogether, "flush", slot("metrics flush"))
    recording.request_id_of = Functions.request_id_of  # type: ignore[assignment]
    service.pulled_target = Functions.pulled_target  # type: ignore[assignment]
    wrapper = [0, 0]
    _wrap(Functions, "empty", wrapper)
    for _ in range(100_000):
        Functions.empty()
    folder = Path(os.environ[PIECES_ENV])

    def write() -> None:
        while True:
            time.sleep(1)
            (folder / f"{os.getpid()}.json").write_text(json.dumps({"pieces": totals, "wrapper": wrapper}))

    threading.Thread(target=write, daemon=True).start()


def _read(folder: Path) -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in folder.glob("*.json")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-notify-pieces-"))
    site, totals = tmp / "site", tmp / "pieces"
    site.mkdir()
    totals.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    receiver = CountingReceiver().start()
    server = metrics_on(servers.ours(tmp / "on", 2))
    assert server.config is not None
    server.config["notifications"] = {"endpoints": [{"name": "bench", "url": receiver.url, "batch": 100}]}
    path = os.pathsep.join([str(site), str(Path(__file__).parent)])
    server.command = ["env", f"{PIECES_ENV}={totals}", f"PYTHONPATH={path}", *server.command]
    url = "/v2/bench/small/manifests/latest"
    try:
        server.start()
        images.seed_small_image(server.url, "bench/small", "latest")
        loadgen.wrk_get(server.url + url, args.connections, 1, loadgen.MANIFEST_ACCEPT)
        settle(receiver)
        for number in range(args.rounds):
            time.sleep(1.2)  # the workers' last writes are in
            before, serving = _read(totals), serving_cpu_seconds(server)
            get = loadgen.wrk_get(server.url + url, args.connections, args.seconds, loadgen.MANIFEST_ACCEPT)
            serving = serving_cpu_seconds(server) - serving
            settle(receiver)
            time.sleep(1.2)
            after, count = _read(totals), max(get.requests, 1)
            print(
                f"round {number + 1}: {get.rps:,.0f} GETs/s, load average {os.getloadavg()[0]:.1f}, "
                f"workers' CPU {serving * 1e6 / count:.1f} µs per GET"
            )
            sums: dict[str, list[int]] = {}
            wrapper = 0.0
            for name, figures in after.items():
                earlier = before.get(name, {"pieces": {}})["pieces"]
                for label, (nanoseconds, calls) in figures["pieces"].items():
                    nanoseconds0, calls0 = earlier.get(label, [0, 0])
                    total = sums.setdefault(label, [0, 0])
                    total[0] += nanoseconds - nanoseconds0
                    total[1] += calls - calls0
                wrapper = figures["wrapper"][0] / max(figures["wrapper"][1], 1) / 1000
            for label, (nanoseconds, calls) in sums.items():
                print(
                    f"  {label:30s} {nanoseconds / count / 1000:6.2f} µs per GET  ({calls:,} calls, "
                    f"{nanoseconds / max(calls, 1) / 1000:.2f} µs each; the wrapper ~{wrapper:.2f})"
                )
    finally:
        server.stop()
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
