"""The pull-through cache's figures: `python3 bench/proxy.py [--quick] [--rounds N]`.

One upstream (CNCF Distribution 2.8) holds a 3-layer image (20, 35 and 50 MiB random layers; 2, 3, 4 MiB with
`--quick`). In front of it, on loopback, two caches: ours in mirror mode (`proxy.remoteurl`) and Distribution 2.8
in proxy mode (the same key). Each round starts both caches empty and measures, interleaved:

- cold pull: `skopeo copy` of the image from the cache into a new OCI layout, nothing cached (which cache goes
  first alternates from round to round: until 2026-12-05 12:40 UTC ours always went first);
- warm pull: the same copy again, everything cached; and, as the scale, the same copy straight from the upstream
  (a local pull);
- 8 concurrent cold pulls: 8 `skopeo copy` started together against freshly emptied caches; wall time, and the
  bytes of blobs the upstream sent (from its access log), as copies of the image (target: one).

The figures are seconds (median over rounds) and ratios ours/Distribution; lower is better for both.

With `--warm-up`, each freshly started cache first pulls another small image (3 layers of 1 MiB) through itself,
so a cold pull measures "nothing of this image cached" on a running cache rather than also the first requests of
freshly started processes (connections, thread pools and statement caches of our workers; Distribution has less to
warm). Both caches get the same warm-up.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import images
import servers
import yaml

LAYERS_FULL = [20, 35, 50]
LAYERS_QUICK = [2, 3, 4]
MIB = 1024 * 1024
REPO = "bench/proxied"
WARM_UP_REPO = "bench/warm-up"
WARM_UP_LAYERS = [1, 1, 1]
_WRITTEN = re.compile(
    r'http\.request\.method=GET .*http\.request\.uri="/v2/[^"]*/blobs/[^"]*".* http\.response\.written=(\d+)'
)


def upstream_blob_bytes(log: Path, since: int) -> int:
    """Bytes of blob GETs Distribution logged after the first `since` characters of its log."""
    text = log.read_text(errors="replace")[since:]
    return sum(
        int(m.group(1))
        for line in text.splitlines()
        if "response completed" in line
        for m in [_WRITTEN.search(line)]
        if m
    )


def log_size(log: Path) -> int:
    return len(log.read_text(errors="replace"))


def cache_servers(workdir: Path, upstream: str, workers: int) -> list[servers.Server]:
    """Ours and Distribution, both empty, both mirroring `upstream`."""
    ours = servers.ours(workdir / "ours", workers)
    assert ours.config is not None
    ours.config["proxy"] = {"remoteurl": upstream}
    ours.config["log"] = {"level": "warn", "accesslog": {"disabled": True}}
    theirs = servers.distribution(workdir / "distribution")
    assert theirs.config is not None
    theirs.config["proxy"] = {"remoteurl": upstream}
    return [ours, theirs]


def seed_upstream(upstream: servers.Server, layout: Path, sizes: list[int], repo: str) -> int:
    """Build an image of layers of `sizes` bytes in `layout` and push it to `upstream` as `repo:latest`; its
    layers' bytes."""
    image_bytes = images.build_layout(layout, sizes)
    images.skopeo_copy_seconds(f"oci:{layout}:{images.REF_NAME}", f"docker://127.0.0.1:{upstream.port}/{repo}:latest")
    return image_bytes


def pull_seconds(server: str, destination: Path, repo: str = REPO) -> float:
    return images.skopeo_copy_seconds(f"docker://{server}/{repo}:latest", f"oci:{destination}:latest")


def warm_up(caches: list[servers.Server], workdir: Path) -> None:
    """Pull the warm-up image through each cache, twice so that both of our workers are likely to have served."""
    for cache in caches:
        for attempt in range(2):
            pull_seconds(f"127.0.0.1:{cache.port}", workdir / f"warm-up-{cache.name}-{attempt}", WARM_UP_REPO)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--warm-up", action="store_true", help="pull another image through each cache first")
    args = parser.parse_args()
    sizes = [s * MIB for s in (LAYERS_QUICK if args.quick else LAYERS_FULL)]
    workers = args.workers or len(__import__("os").sched_getaffinity(0))
    base = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    upstream = servers.distribution(base / "upstream", "upstream")
    assert upstream.config is not None
    upstream.config["log"] = {"level": "info"}  # its access log counts what the caches fetch
    figures: dict[str, list[float]] = {}
    running: list[servers.Server] = []
    try:
        upstream.start()
        image_bytes = seed_upstream(upstream, base / "layout", sizes, REPO)
        if args.warm_up:
            seed_upstream(upstream, base / "warm-up", [s * MIB for s in WARM_UP_LAYERS], WARM_UP_REPO)
        for number in range(args.rounds):
            rounds = base / f"round{number}"
            caches = cache_servers(rounds, upstream.url, workers)
            running = [c.start() for c in caches]
            if args.warm_up:
                warm_up(caches, rounds)
            # the order alternates: a cold pull leaves ~100 MiB of dirty pages whose writeback slows whatever runs next
            in_order = caches if number % 2 == 0 else caches[::-1]
            for cache in in_order:
                host = f"127.0.0.1:{cache.port}"
                figures.setdefault(f"cold pull, {cache.name}", []).append(
                    pull_seconds(host, rounds / f"{cache.name}-cold")
                )
            for cache in in_order:
                host = f"127.0.0.1:{cache.port}"
                figures.setdefault(f"warm pull, {cache.name}", []).append(
                    pull_seconds(host, rounds / f"{cache.name}-warm")
                )
            figures.setdefault("local pull (upstream itself)", []).append(
                pull_seconds(f"127.0.0.1:{upstream.port}", rounds / "local")
            )
            for cache in running:
                cache.stop()
            caches = cache_servers(rounds / "concurrent", upstream.url, workers)
            running = [c.start() for c in caches]
            if args.warm_up:
                warm_up(caches, rounds / "concurrent")
            for cache in caches:
                host = f"127.0.0.1:{cache.port}"
                since = log_size(upstream.log_path)
                copies = [
                    (f"docker://{host}/{REPO}:latest", f"oci:{rounds / f'{cache.name}-c{n}'}:latest") for n in range(8)
                ]
                figures.setdefault(f"8 concurrent cold pulls, {cache.name}", []).append(
                    images.skopeo_copies_seconds(copies)
                )
                sent = upstream_blob_bytes(upstream.log_path, since)
                figures.setdefault(f"upstream copies for 8 cold pulls, {cache.name}", []).append(sent / image_bytes)
            for cache in running:
                cache.stop()
            running = []
            shutil.rmtree(rounds, ignore_errors=True)
    finally:
        for server in [*running, upstream]:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    warmed = ", caches warmed up first" if args.warm_up else ""
    print(f"image: 3 layers, {image_bytes / MIB:.1f} MiB; {args.rounds} round(s){warmed}; noisy on a shared machine")
    for name, value in medians.items():
        print(f"  {name:50s} {value:8.3f}")
    for figure in ("cold pull", "warm pull", "8 concurrent cold pulls"):
        ratio = medians[f"{figure}, ours"] / medians[f"{figure}, distribution"]
        print(f"  {figure}: ours / Distribution = {ratio:.2f}")
    print(
        f"  warm pull, ours / local pull = {medians['warm pull, ours'] / medians['local pull (upstream itself)']:.2f}"
    )
    print(yaml.safe_dump({"raw": figures}, default_flow_style=True), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
