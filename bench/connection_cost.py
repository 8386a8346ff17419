"""Server CPU per request on a new connection against a keep-alive one, ours against a bare aiohttp app with as many
workers (`bare_aiohttp.py`): `python3 bench/connection_cost.py [--requests N] [--rounds R] [--workers W]`.

skopeo opens a connection for nearly every request of a push (57 per push of 10 layers) and closes it after the
answer; what a connection costs beyond its request is what this isolates. One client, one request at a time, as
skopeo sends them: `GET /v2/` and a blob `HEAD` (of a stored blob: ours answers it from its cache), each on a fresh
connection (the client closes it after reading the answer) and on one kept-alive connection. Rounds interleave the
two servers, the order alternating; medians of the per-round figures are printed, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import rawhttp
import servers
import smallwrites
from run import cpu_seconds
from servers import Server

BARE_SERVER = Path(__file__).with_name("bare_aiohttp.py")


def bare(workdir: Path, workers: int) -> Server:
    port = servers.free_port()
    command = [sys.executable, str(BARE_SERVER), str(port), str(workers)]
    return Server("bare aiohttp", workdir, command, port=port)


def fresh_connections(url: str, method: str, count: int) -> None:
    for _ in range(count):
        with rawhttp.Connection(url) as conn:
            rawhttp.expect(conn.request(url, method), 200, f"{method} {url}")


def one_connection(url: str, method: str, count: int) -> None:
    with rawhttp.Connection(url) as conn:
        for _ in range(count):
            rawhttp.expect(conn.request(url, method), 200, f"{method} {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per server, kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-connections-") as tmp:
        pair = [servers.ours(Path(tmp) / "ours", args.workers), bare(Path(tmp) / "bare", args.workers)]
        for server in pair:
            (server.workdir).mkdir(parents=True, exist_ok=True)
            server.start()
        try:
            return measure(pair, args)
        finally:
            for server in pair:
                server.stop()


def measure(pair: list[Server], args: argparse.Namespace) -> int:
    ours, bare_server = pair
    blob = smallwrites.random_blobs(1, 20_000)
    load = smallwrites.run(ours.url, blob, 1, smallwrites.blob_post_put(ours.url, "bench/connections"))
    assert load.failures == 0, load.first_error
    paths = {ours.name: f"/v2/bench/connections/blobs/{blob[0][1]}", bare_server.name: f"/v2/b/blobs/{blob[0][1]}"}
    kinds: list[tuple[str, str, Callable[[str, str, int], None]]] = [
        ("GET /v2/, new connection", "GET", fresh_connections),
        ("GET /v2/, keep-alive", "GET", one_connection),
        ("blob HEAD, new connection", "HEAD", fresh_connections),
        ("blob HEAD, keep-alive", "HEAD", one_connection),
    ]
    figures: dict[tuple[str, str], list[float]] = {}
    for server in pair:  # warm-up: imports, caches, the kernel's socket structures
        for _, method, run in kinds:
            run(server.url + ("/v2/" if method == "GET" else paths[server.name]), method, 200)
    loads = []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for server in pair if r % 2 == 0 else pair[::-1]:
            for kind, method, run in kinds:
                url = server.url + ("/v2/" if method == "GET" else paths[server.name])
                before = cpu_seconds(server)
                run(url, method, args.requests)
                used = cpu_seconds(server) - before
                figures.setdefault((kind, server.name), []).append(used / args.requests * 1e6)
        print(f"round {r + 1}/{args.rounds} done, load {loads[-1]:.2f}", file=sys.stderr)
    print(
        f"\nserver CPU per request (µs), median of {args.rounds} rounds of {args.requests}; {args.workers} workers; "
        f"load average {min(loads):.2f}-{max(loads):.2f}"
    )
    print(f"| request | {ours.name} | {bare_server.name} | ours - bare |")
    print("|---|---|---|---|")
    for kind, _, _ in kinds:
        a = statistics.median(figures[(kind, ours.name)])
        b = statistics.median(figures[(kind, bare_server.name)])
        print(f"| {kind} | {a:.0f} | {b:.0f} | {a - b:+.0f} |")
    for name in (ours.name, bare_server.name):
        # per round, both from the same minute of the machine's load: steadier than a difference of medians
        fresh, kept = figures[("GET /v2/, new connection", name)], figures[("GET /v2/, keep-alive", name)]
        costs = sorted(f - k for f, k in zip(fresh, kept, strict=True))
        print(
            f"{name}: a connection costs {statistics.median(costs):.0f} µs (GET /v2/ new - keep-alive, per round: "
            f"{', '.join(f'{c:.0f}' for c in costs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
