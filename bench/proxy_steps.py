"""Where a cold pull's time goes: `python3 bench/proxy_steps.py [--quick] [--rounds N]`.

The setting of `proxy.py` (one upstream, ours in mirror mode and Distribution 2.8 in proxy mode, both empty), with
access logs on for all three: each round makes one cold `skopeo copy` through each cache (in alternating order) and
prints, per request the client made, its duration at the cache, and the upstream requests that pull caused with
their durations at the upstream (Distribution logs them with `http.response.duration`, our registry's access log
ends with the duration in seconds). Which step is slower, and whether the cache asks the upstream more, shows there.

Each of our requests also names the worker (pid) that served it: a cold blob is fetched, hashed, written and sent by
the worker its request reached, so how the kernel spread skopeo's connections over the workers shows too (`workers:
[3, 1]`: three blob requests on one worker, one on the other).

With `--second`, each round then pulls a second image (same layer sizes, other bytes), cold too, through the same
caches: what the first pull of freshly started processes pays that the next cold pull does not.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import proxy
import servers

_OURS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+) (?P<bytes>\d+) .* (?P<seconds>[\d.]+)s'
)
_DISTRIBUTION_FIELD = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)')
_GO_DURATION = re.compile(r"([\d.]+)(h|ms|µs|us|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


SECOND = "bench/second"
_PID = re.compile(r"\[(\d+)\] aiohttp\.access")


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    status: int
    size: int
    seconds: float
    worker: int | None = None
    """Our worker's pid (Distribution is one process)."""

    def describe(self) -> str:
        path = re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}", r"\1", self.path.split("?")[0])
        worker = f" pid {self.worker}" if self.worker is not None else ""
        return f"{self.method:4} {path:58} {self.status} {self.size:>10} B {self.seconds * 1000:9.1f} ms{worker}"


def go_seconds(text: str) -> float:
    """A Go `time.Duration` as printed (`1.5s`, `951.524µs`, `1m2.5s`) in seconds."""
    return sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_DURATION.findall(text))


def distribution_steps(log: str) -> list[Step]:
    """The requests Distribution's access log records (its `response completed` lines), in the order they ended."""
    steps = []
    for line in log.splitlines():
        if "response completed" not in line:
            continue
        fields = {key: value.strip('"') for key, value in _DISTRIBUTION_FIELD.findall(line)}
        steps.append(
            Step(
                fields["http.request.method"],
                fields["http.request.uri"],
                int(fields["http.response.status"]),
                int(fields.get("http.response.written", 0)),
                go_seconds(fields["http.response.duration"]),
            )
        )
    return steps


def our_steps(log: str) -> list[Step]:
    """The requests our access log records, in the order they ended."""
    steps = []
    for line in log.splitlines():
        if "aiohttp.access" not in line:
            continue
        m = _OURS.search(line)
        if m:
            pid = _PID.search(line)
            worker = int(pid[1]) if pid else None
            steps.append(
                Step(m["method"], m["path"], int(m["status"]), int(m["bytes"]), float(m["seconds"]), worker),
            )
    return steps


def pulled(steps: list[Step]) -> list[Step]:
    """The requests of the pull itself (not the readiness probes before it)."""
    return [s for s in steps if "/manifests/" in s.path or "/blobs/" in s.path or s.method != "GET"]


def spread(steps: list[Step]) -> list[int]:
    """How many blob requests each worker served, most first."""
    counts: dict[int | None, int] = {}
    for step in steps:
        if "/blobs/" in step.path:
            counts[step.worker] = counts.get(step.worker, 0) + 1
    return sorted(counts.values(), reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--second", action="store_true", help="then pull a second image through the same caches")
    args = parser.parse_args()
    sizes = [s * proxy.MIB for s in (proxy.LAYERS_QUICK if args.quick else proxy.LAYERS_FULL)]
    workers = args.workers or len(__import__("os").sched_getaffinity(0))
    base = Path(tempfile.mkdtemp(prefix="bench-proxy-steps-"))
    upstream = servers.distribution(base / "upstream", "upstream")
    assert upstream.config is not None
    upstream.config["log"] = {"level": "info"}
    running: list[servers.Server] = []
    try:
        upstream.start()
        proxy.seed_upstream(upstream, base / "layout", sizes, proxy.REPO)
        repos = [proxy.REPO]
        if args.second:
            proxy.seed_upstream(upstream, base / "second", sizes, SECOND)
            repos.append(SECOND)
        for number in range(args.rounds):
            caches = proxy.cache_servers(base / f"round{number}", upstream.url, workers)
            for cache in caches:
                assert cache.config is not None
                cache.config["log"] = {"level": "info"}  # access log on, durations included
            running = [cache.start() for cache in caches]
            for repo in repos:
                for cache in caches if number % 2 == 0 else reversed(caches):
                    since = proxy.log_size(cache.log_path), proxy.log_size(upstream.log_path)
                    destination = base / f"{cache.name}-{number}-{repo.replace('/', '-')}"
                    seconds = proxy.pull_seconds(f"127.0.0.1:{cache.port}", destination, repo)
                    own = cache.log_path.read_text(errors="replace")[since[0] :]
                    asked = distribution_steps(upstream.log_path.read_text(errors="replace")[since[1] :])
                    steps = pulled(our_steps(own) if cache.name == "ours" else distribution_steps(own))
                    placement = f", workers: {spread(steps)}" if cache.name == "ours" else ""
                    print(f"round {number}, {cache.name}, {repo}: cold pull {seconds:.3f} s{placement}")
                    for step in steps:
                        print(f"  client   {step.describe()}")
                    for step in asked:
                        print(f"  upstream {step.describe()}")
            for cache in running:
                cache.stop()
            running = []
    finally:
        for server in [*running, upstream]:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
