"""The cost of notifications (issue 13): our registry with no endpoint against the same registry with one, side by
side, in interleaved rounds: manifest GET and blob HEAD requests per second, and 20 KB blob pushes per second. In a
round each load runs on every server back to back (in an order reversed every other round), and the ratios are given
both as ratios of the medians and as the median of each round's own ratio, of figures taken seconds apart.

    python3 bench/notifications.py            # 3 rounds of 10 s loads, 600 blobs a round
    python3 bench/notifications.py --quick    # 2 rounds of 4 s loads, 200 blobs a round

A third registry has the same endpoint with `ignore: {actions: [pull]}`: what the machinery costs requests that
record nothing. CNCF Distribution 2.8 runs beside them, without and with the same endpoint in its
`notifications.endpoints` (it queues events in memory and POSTs one per request), for the ratio the issue asks
(`--no-distribution` leaves it out). The endpoint is a counting receiver on loopback (aiohttp, in this process) that
answers 200 and parses nothing; the registry sends it envelopes of up to `--batch` events (Distribution sends 1).
Every manifest GET is a pull event, recorded and delivered while the load runs; blob HEADs record nothing; every
pushed blob is a push event written in the push's transaction. Server CPU per request counts each phase until the
receiver stopped getting events (the deliverer caught up), so delivery is part of what a request costs; for manifest
GETs, the CPU during the load of the processes at the workers' priority (not our niced delivery process) is
shown too: what requests competed with. After the
table, per load: the events delivered and how long after the load ended the last of them arrived (our delivery
runs in a process of lower CPU priority, `notifications.delivery.nice`: under a load that takes every core the
events wait in the database and drain after it).
The "on" servers (ours, and Distribution) also serve Prometheus metrics (`http.debug.addr`,
`http.debug.prometheus.enabled`), as the issue's target compares both features on against both off;
`--no-metrics` measures notifications alone.
Target: manifest GET and blob HEAD at most 10% slower with notifications and metrics on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import images
import loadgen
import servers
import smallwrites
from aiohttp import web
from run import cpu_seconds
from servers import Server


class CountingReceiver:
    """Answers every POST with 200 and counts the events in it (one `"action"` key each), nothing more."""

    def __init__(self) -> None:
        self.port = servers.free_port()
        self.events = 0
        self.last_at = 0.0
        """`time.monotonic()` when the last envelope came."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _receive(self, request: web.Request) -> web.Response:
        self.events += (await request.read()).count(b'"action":')
        self.last_at = time.monotonic()
        return web.Response()

    def start(self) -> CountingReceiver:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/events", self._receive)
            runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


QUIET_SECONDS = 1.5
"""Longer than a worker's pull notes wait (`recorder.FLUSH_SECONDS`) plus the deliverer's poll (0.25 s), with
room for a 1 s window (`notify_pipeline.py --flush-seconds`): a receiver quiet this long has every event of the load
(a shorter wait counted a load's last pulls in the next server's round)."""


def settle(receiver: CountingReceiver, timeout: float = 120.0) -> float:
    """Wait until the receiver got nothing for `QUIET_SECONDS` (the deliverer caught up); how long that took."""
    started = time.monotonic()
    count = -1
    while receiver.events != count and time.monotonic() - started < timeout:
        count = receiver.events
        time.sleep(QUIET_SECONDS)
    return time.monotonic() - started


def serving_cpu_seconds(server: Server) -> float:
    """User+system CPU of the server's processes at the group leader's CPU priority: the workers and the master,
    not our niced notification delivery process (`notifications.delivery.nice`)."""
    if server.proc is None:
        return 0.0
    return cpu_seconds(server, nice_at_most=os.getpriority(os.PRIO_PROCESS, server.proc.pid))


def per(cpu: float, count: int) -> float:
    return cpu * 1e6 / max(count, 1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def metrics_on(server: Server) -> Server:
    """`server` as it is, with Prometheus metrics on a debug listener too (the same keys for both registries)."""
    assert server.config is not None
    server.config.setdefault("http", {})["debug"] = {
        "addr": f"127.0.0.1:{servers.free_port()}",
        "prometheus": {"enabled": True},
    }
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s loads, 200 blobs a round")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="the endpoint's `batch` (events per envelope)")
    parser.add_argument("--no-distribution", action="store_true", help="skip CNCF Distribution (off and on)")
    parser.add_argument(
        "--no-metrics", action="store_true", help="notifications alone: no Prometheus metrics on the 'on' servers"
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    seconds, blobs, connections = (4, 200, 64) if args.quick else (10, 600, 64)

    receiver = CountingReceiver().start()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-notify-"))
    off = servers.ours(tmp / "off", args.workers)
    on = servers.ours(tmp / "on", args.workers)
    no_pulls = servers.ours(tmp / "no-pulls", args.workers)
    off.name, on.name, no_pulls.name = "off", "on", "on, pulls ignored"
    endpoint = {"name": "bench", "url": receiver.url, "batch": args.batch}
    assert on.config is not None
    assert no_pulls.config is not None
    on.config["notifications"] = {"endpoints": [endpoint]}
    no_pulls.config["notifications"] = {"endpoints": [{**endpoint, "ignore": {"actions": ["pull"]}}]}
    if not args.no_metrics:  # the cost: metrics and notifications on against both off
        on, no_pulls = (metrics_on(server) for server in (on, no_pulls))
    pair: list[Server] = [off, on, no_pulls]
    if not args.no_distribution:
        dist_off = servers.distribution(tmp / "dist-off", "Distribution off")
        dist_on = servers.distribution(tmp / "dist-on", "Distribution on")
        assert dist_on.config is not None
        dist_on.config["notifications"] = {
            "endpoints": [{"name": "bench", "url": receiver.url, "timeout": "5s", "threshold": 5, "backoff": "1s"}]
        }
        pair += [dist_off, dist_on if args.no_metrics else metrics_on(dist_on)]
    results: dict[str, dict[str, list[float]]] = {}
    failures: list[str] = []

    drains: dict[str, dict[str, list[tuple[int, float]]]] = {}
    """Per load and server: (events delivered, seconds from the load's end to the last event's arrival)."""

    def add(figure: str, server: Server, value: float) -> None:
        results.setdefault(figure, {}).setdefault(server.name, []).append(value)

    def check(server: Server, load: str, failed: int) -> None:
        if failed:
            failures.append(f"{server.name} {load}: {failed} failed requests")

    def settled(load: str, server: Server, before: int, ended: float) -> None:
        """Wait for the deliverer to catch up, and note what this load's events did."""
        settle(receiver)
        delivered = receiver.events - before
        after = max(receiver.last_at - ended, 0.0) if delivered else 0.0
        drains.setdefault(load, {}).setdefault(server.name, []).append((delivered, after))

    try:
        for server in pair:
            server.start()
        layer = {server.name: images.seed_small_image(server.url, "bench/small", "latest")[0] for server in pair}
        for server in pair:  # warm up both
            loadgen.wrk_get(f"{server.url}/v2/bench/small/manifests/latest", connections, 2, loadgen.MANIFEST_ACCEPT)
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}")
            order = pair if r % 2 == 0 else pair[::-1]
            # one load at a time on every server, back to back: the servers' figures of a round are taken minutes
            # apart otherwise, and this host's speed drifts by more than the 10% measured within that time
            for server in order:
                cpu, before, serving = cpu_seconds(server), receiver.events, serving_cpu_seconds(server)
                get = loadgen.wrk_get(
                    f"{server.url}/v2/bench/small/manifests/latest", connections, seconds, loadgen.MANIFEST_ACCEPT
                )
                add("manifest GET by tag, req/s", server, get.rps)
                serving = per(serving_cpu_seconds(server) - serving, get.requests)
                add("manifest GET, CPU µs per request during the load at the workers' priority", server, serving)
                settled("manifest GET", server, before, time.monotonic())
                add("manifest GET, server CPU µs per request", server, per(cpu_seconds(server) - cpu, get.requests))
                check(server, "GET", get.failures)
            for server in order:
                cpu, before = cpu_seconds(server), receiver.events
                head = loadgen.hey(f"{server.url}/v2/bench/small/blobs/{layer[server.name]}", connections, seconds)
                add("blob HEAD, req/s", server, head.rps)
                settled("blob HEAD", server, before, time.monotonic())
                add("blob HEAD, server CPU µs per request", server, per(cpu_seconds(server) - cpu, head.requests))
                check(server, "HEAD", head.failures)
            for server in order:
                cpu, before = cpu_seconds(server), receiver.events
                pushed = smallwrites.run(
                    server.url,
                    smallwrites.random_blobs(blobs, 20_000),
                    16,
                    smallwrites.blob_post_put(server.url, f"bench/push{r}"),
                )
                add("20 KB blob pushes (POST+PUT, 16 conns), blobs/s", server, pushed.items_per_second)
                settled("20 KB pushes", server, before, time.monotonic())
                add("20 KB blob push, server CPU µs per blob", server, per(cpu_seconds(server) - cpu, pushed.items))
                check(server, "push", pushed.failures)
    finally:
        for server in pair:
            server.stop()
        receiver.stop()

    print(f'Medians of {rounds} rounds; "per round": the median (and range) of the ratios within each round.')
    print()
    header = "| figure | notifications off | on | on / off | per round | on, pulls ignored | pulls ignored / off |"
    print(header, end="")
    print(
        "" if args.no_distribution else " Distribution off | Distribution on | on / off | ours on / Distribution on |"
    )
    print("|---|---|---|---|---|---|---|" + ("" if args.no_distribution else "---|---|---|---|"))
    for figure, by_server in results.items():
        median = {name: statistics.median(values) for name, values in by_server.items()}
        off_median, on_median, quiet_median = median["off"], median["on"], median[no_pulls.name]
        paired = [on_value / off_value for on_value, off_value in zip(by_server["on"], by_server["off"], strict=True)]
        row = (
            f"| {figure} | {off_median:,.0f} | {on_median:,.0f} | {on_median / off_median:.2f} "
            f"| {statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f}) "
            f"| {quiet_median:,.0f} | {quiet_median / off_median:.2f} |"
        )
        if not args.no_distribution:
            d_off, d_on = median["Distribution off"], median["Distribution on"]
            row += f" {d_off:,.0f} | {d_on:,.0f} | {d_on / d_off:.2f} | {on_median / d_on:.2f} |"
        print(row)
    print()
    print(f"events received: {receiver.events:,} (envelopes of up to {args.batch})")
    print()
    print("| load | server | events delivered per round | last event after the load ended, s (median, max) |")
    print("|---|---|---|---|")
    for load, by_server in drains.items():
        for name, figures in by_server.items():
            if not any(delivered for delivered, _ in figures):
                continue
            counts = ", ".join(f"{delivered:,}" for delivered, _ in figures)
            afters = [after for _, after in figures]
            print(f"| {load} | {name} | {counts} | {statistics.median(afters):.2f}, {max(afters):.2f} |")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
