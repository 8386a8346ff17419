"""Server CPU per request of a skopeo push, by kind, ours against Distribution (and another tree):
`python3 bench/request_costs.py [--blobs N] [--clients C] [--rounds R] [--base DIR] [--no-distribution]`.

skopeo pushes each blob with two `HEAD`s (404), a `POST`, a `PATCH` with the whole body and an empty `PUT
?digest=`, every request on a connection of its own (its transport disables keep-alive). This sends the same
requests phase by phase (all `N` blobs' first `HEAD`s, then their `POST`s, ...) from `C` client threads, each
request on a new connection closed after the answer, and counts each server's CPU per request of each phase: where
a push's server CPU goes, request by request, which `run.py`'s whole-push figures cannot tell. `GET /v2/` is the
floor (a connection and the cheapest answer); `HEAD hit` asks for the blobs just pushed. Rounds interleave the
servers, the order reversed every other round; medians are printed. `--base DIR` adds our registry run from
another source tree (`DIR/src`, `DIR/core/src`, e.g. a `git archive` of a commit) as "base".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import rawhttp
import servers
from run import cpu_seconds
from servers import Server

KINDS = ("GET /v2/", "HEAD miss", "POST", "PATCH", "PUT", "HEAD hit")
BLOB_KINDS = ("HEAD miss", "HEAD miss", "POST", "PATCH", "PUT")
"""A blob of a skopeo push: its two HEADs, POST, PATCH and PUT."""


def registry_from(tree: Path, workdir: Path, workers: int) -> Server:
    server = servers.ours(workdir, workers)
    server.name = "base"
    server.command = ["env", f"PYTHONPATH={tree / 'src'}:{tree / 'core' / 'src'}", *server.command]
    return server


def expect(response: rawhttp.Response, status: int, what: str) -> rawhttp.Response:
    if response.status != status:
        raise RuntimeError(f"{what}: {response.status} {response.body[:200]!r}")
    return response


class Push:
    """The requests of one round's blobs against one server, each on a connection of its own."""

    def __init__(self, base: str, repo: str, blobs: list[bytes]) -> None:
        self.base, self.repo, self.blobs = base, repo, blobs
        self.digests = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
        self.locations: dict[int, str] = {}

    def request(self, kind: str, i: int) -> None:
        blob_url = f"{self.base}/v2/{self.repo}/blobs/{self.digests[i]}"
        if kind == "GET /v2/":
            expect(rawhttp.request(self.base + "/v2/"), 200, kind)
        elif kind in ("HEAD miss", "HEAD hit"):
            expect(rawhttp.request(blob_url, "HEAD"), 404 if kind == "HEAD miss" else 200, kind)
        elif kind == "POST":
            answer = expect(rawhttp.request(f"{self.base}/v2/{self.repo}/blobs/uploads/", "POST"), 202, kind)
            self.locations[i] = answer.header("location")
        elif kind == "PATCH":
            url = rawhttp.urljoin(self.base, self.locations[i])
            headers = {"Content-Type": "application/octet-stream"}
            answer = expect(rawhttp.request(url, "PATCH", headers=headers, body=self.blobs[i]), 202, kind)
            self.locations[i] = answer.header("location")
        else:
            url = rawhttp.urljoin(self.base, self.locations[i])
            expect(rawhttp.request(f"{url}{'&' if '?' in url else '?'}digest={self.digests[i]}", "PUT"), 201, kind)


def in_threads(count: int, clients: int, action: Callable[[int], None]) -> None:
    """`action(i)` for every i below `count`, from `clients` threads; the first error is raised."""
    numbers: Iterator[int] = iter(range(count))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while not errors:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            try:
                action(i)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=400, help="20 KB blobs per server and round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--base", type=Path, help="another source tree of ours, run beside as 'base'")
    parser.add_argument("--no-distribution", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp:
        pool = [servers.ours(Path(tmp) / "ours", args.workers)]
        if args.base is not None:
            pool.append(registry_from(args.base.resolve(), Path(tmp) / "base", args.workers))
        if not args.no_distribution:
            pool.append(servers.distribution(Path(tmp) / "distribution"))
        try:
            for server in pool:
                server.start()
            measure(pool, args)
        finally:
            for server in pool:
                server.stop()
    return 0


def measure(pool: list[Server], args: argparse.Namespace) -> None:
    figures: dict[tuple[str, str], list[float]] = {}
    loads = []
    for r in range(args.rounds + 1):  # round 0 warms each server up and is not counted
        loads.append(os.getloadavg()[0])
        for server in pool if r % 2 == 0 else pool[::-1]:
            push = Push(server.url, f"bench/requests-{r}", [os.urandom(20_000) for _ in range(args.blobs)])
            for kind in KINDS:
                before = cpu_seconds(server)
                in_threads(args.blobs, args.clients, lambda i, kind=kind, push=push: push.request(kind, i))
                if r:
                    used = cpu_seconds(server) - before
                    figures.setdefault((kind, server.name), []).append(used * 1e6 / args.blobs)
        print(f"round {r}/{args.rounds} done, load {loads[-1]:.2f}", file=sys.stderr)
    print(
        f"\nserver CPU per request (µs), each on a new connection, median of {args.rounds} rounds of {args.blobs} "
        f"20 KB blobs from {args.clients} clients; load average {min(loads):.2f}-{max(loads):.2f}"
    )
    print("| request | " + " | ".join(server.name for server in pool) + " |")
    print("|---|" + "---|" * len(pool))
    for kind in KINDS:
        cells = [f"{statistics.median(figures[(kind, server.name)]):,.0f}" for server in pool]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    blob = [sum(statistics.median(figures[(kind, server.name)]) for kind in BLOB_KINDS) for server in pool]
    cells = [f"{b:,.0f}" for b in blob]
    print("| a blob as skopeo pushes it (2 HEAD miss, POST, PATCH, PUT) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
