"""Before/after for the cost of pull events: `python3 bench/ab_notifications.py --base DIR [--quick] [--rounds N]`.

Three registries side by side, in an order that rotates each round: this tree with no endpoint ("off"), this tree
with an endpoint and metrics on ("on"), and a base tree with the same ("on, base"). `DIR` holds the base's `src/`
and `core/src/`, e.g. `git archive <commit> src core/src | tar -x -C DIR`, put on `PYTHONPATH` for that server
only. Each round puts a manifest GET load on each (every GET is a pull event) and reports, medians over the rounds:
requests per second; server CPU per request until the receiver stopped getting events (delivery included); CPU per
request during the load of the processes at the workers' priority (what requests competed with: our niced
delivery process, `notifications.delivery.nice`, is left out); and when the last event arrived after the load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import images
import loadgen
import servers
from notifications import CountingReceiver, log, metrics_on, per, serving_cpu_seconds, settle
from run import cpu_seconds
from servers import Server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a source tree holding src/ and core/src/")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 4 s loads")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="the endpoint's `batch` (events per envelope)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 6)
    seconds, connections = (4, 64) if args.quick else (10, 64)
    base_path = f"{args.base.resolve() / 'src'}:{args.base.resolve() / 'core' / 'src'}"

    receiver = CountingReceiver().start()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-ab-notify-"))
    endpoint = {"name": "bench", "url": receiver.url, "batch": args.batch}
    off = servers.ours(tmp / "off", args.workers)
    on = metrics_on(servers.ours(tmp / "on", args.workers))
    base = metrics_on(servers.ours(tmp / "base", args.workers))
    off.name, on.name, base.name = "off", "on", "on, base"
    for server in (on, base):
        assert server.config is not None
        server.config["notifications"] = {"endpoints": [endpoint]}
    base.command = ["env", f"PYTHONPATH={base_path}", *base.command]
    trio: list[Server] = [off, on, base]
    figures: dict[str, dict[str, list[float]]] = {}

    def add(figure: str, server: Server, value: float) -> None:
        figures.setdefault(figure, {}).setdefault(server.name, []).append(value)

    failures = 0
    try:
        for server in trio:
            server.start()
        url = "/v2/bench/small/manifests/latest"
        for server in trio:
            images.seed_small_image(server.url, "bench/small", "latest")
            loadgen.wrk_get(server.url + url, connections, 2, loadgen.MANIFEST_ACCEPT)
        settle(receiver)
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}")
            for server in trio[r % 3 :] + trio[: r % 3]:
                cpu, serving, before = cpu_seconds(server), serving_cpu_seconds(server), receiver.events
                get = loadgen.wrk_get(server.url + url, connections, seconds, loadgen.MANIFEST_ACCEPT)
                ended = time.monotonic()
                failures += get.failures
                add("manifest GET, req/s", server, get.rps)
                serving = per(serving_cpu_seconds(server) - serving, get.requests)
                add("CPU µs per GET during the load, workers' priority", server, serving)
                settle(receiver)
                add("server CPU µs per GET, delivery included", server, per(cpu_seconds(server) - cpu, get.requests))
                delivered = receiver.events - before
                add("events delivered per GET", server, delivered / max(get.requests, 1))
                add("last event after the load ended, s", server, max(receiver.last_at - ended, 0) if delivered else 0)
    finally:
        for server in trio:
            server.stop()
        receiver.stop()

    print("| figure (median) | off | on | on / off | on, base | base / off |")
    print("|---|---|---|---|---|---|")
    for figure, by_server in figures.items():
        median = {name: statistics.median(values) for name, values in by_server.items()}
        o, n, b = median["off"], median["on"], median["on, base"]
        on_ratio, base_ratio = (f"{n / o:.2f}", f"{b / o:.2f}") if o else ("-", "-")
        print(f"| {figure} | {o:,.2f} | {n:,.2f} | {on_ratio} | {b:,.2f} | {base_ratio} |")
    if failures:
        print(f"FAILED: {failures} failed requests")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
