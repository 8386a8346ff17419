"""Before/after for the small-write path: `python3 bench/ab_writes.py --base DIR [--load put|patch|skopeo]`.

Runs our registry twice side by side, one from the working tree and one from another source tree (`DIR` holds
its `src/` and `core/src/`, e.g. `git archive <commit> src core/src | tar -x -C DIR`), put on `PYTHONPATH` ahead
of the installed package, and drives them in interleaved rounds (the order alternating) with one load: 20 KB
blobs as POST + PUT with the body (`put`) or POST + PATCH + empty PUT (`patch`) from 16 connections, skopeo
pushes of 10 x 20 KB layers, one at a time and 12 at once (`skopeo`), or metadata writes from 8 connections as
`run.py --small-writes` makes them: new repositories by two mounts and a manifest PUT (`mounts`), tag PUTs of an
existing manifest (`tags`). Prints every round and the medians: server CPU per item (per request for `mounts` and
`tags`) and items (requests) per second, or push times and server CPU per push in each of the two. On a shared machine
the two sides share its load alike, which is what makes a change of a few percent visible where two separate
`run.py` runs differ by more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import images
import servers
import smallwrites
from images import SeededImage
from run import cpu_seconds
from servers import Server

BLOB_SIZE = 20_000
BATCH = 12
METADATA_CONNECTIONS = 8


def registry(name: str, workdir: Path, pythonpath: str | None) -> Server:
    server = servers.ours(workdir / name, 2)
    server.name = name
    if pythonpath:
        server.command = ["env", f"PYTHONPATH={pythonpath}", *server.command]
    return server


def blobs_round(server: Server, load: str, count: int, repo: str) -> tuple[float, float]:
    """Server CPU per blob (µs) and blobs per second."""
    blobs = smallwrites.random_blobs(count, BLOB_SIZE)
    action = (smallwrites.blob_post_put if load == "put" else smallwrites.blob_patch_put)(server.url, repo)
    before = cpu_seconds(server)
    result = smallwrites.run(server.url, blobs, 16, action)
    return (cpu_seconds(server) - before) / count * 1e6, result.items_per_second


def metadata_round(server: Server, load: str, count: int, r: int, image: SeededImage) -> tuple[float, float]:
    """Server CPU per request (µs) and requests per second, for `count` new repositories or tags."""
    source = "bench/mount-source"
    if load == "mounts":
        items = [f"ab/mounted-{r}-{i}" for i in range(count)]
        action = smallwrites.mount_and_manifest(server.url, source, image)
    else:
        items = [f"t{r}-{i}" for i in range(count)]
        action = smallwrites.tag_put(server.url, source, image)
    before = cpu_seconds(server)
    result = smallwrites.run(server.url, items, METADATA_CONNECTIONS, action)
    if result.failures:
        raise SystemExit(f"{server.name}: {result.failures} failures, first: {result.first_error}")
    return (cpu_seconds(server) - before) / result.requests * 1e6, result.requests_per_second


def skopeo_round(
    server: Server, layouts: Callable[[int], list[Path]], pushes: int, repo: str
) -> tuple[float, float, float, float]:
    """Median seconds of `pushes` pushes one at a time, the wall time of `BATCH` at once, and the server's CPU per
    push (ms) in each of the two (the layouts are built before the CPU is read)."""

    def target(i: int) -> str:
        return f"docker://127.0.0.1:{server.port}/{repo}-{i}:latest"

    singles = layouts(pushes)
    before = cpu_seconds(server)
    one = [images.skopeo_copy_seconds(f"oci:{d}:{images.REF_NAME}", target(i)) for i, d in enumerate(singles)]
    one_cpu = (cpu_seconds(server) - before) / pushes * 1e3
    batch = [(f"oci:{d}:{images.REF_NAME}", target(pushes + i)) for i, d in enumerate(layouts(BATCH))]
    before = cpu_seconds(server)
    wall = images.skopeo_copies_seconds(batch)
    return statistics.median(one), wall, one_cpu, (cpu_seconds(server) - before) / BATCH * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True, help="a source tree holding src/ and core/src/")
    parser.add_argument("--load", choices=("put", "patch", "skopeo", "mounts", "tags"), default="put")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--count", type=int, default=500, help="blobs (put, patch), repositories (mounts) or tags (tags) per round"
    )
    parser.add_argument("--pushes", type=int, default=4, help="pushes one at a time per round (skopeo)")
    args = parser.parse_args()
    base = args.base.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="ab-writes-"))
    sides = [registry("base", tmp, f"{base / 'src'}:{base / 'core' / 'src'}"), registry("this", tmp, None)]
    made = 0

    def layouts(n: int) -> list[Path]:
        nonlocal made
        out = []
        for _ in range(n):
            made += 1
            images.build_small_layout(tmp / f"layout{made}", 10, BLOB_SIZE)
            out.append(tmp / f"layout{made}")
        return out

    rounds: dict[str, list[tuple[float, ...]]] = {side.name: [] for side in sides}
    loads = [os.getloadavg()[0]]
    seeded: dict[str, SeededImage] = {}
    for side in sides:
        side.start()
    try:
        if args.load in ("mounts", "tags"):
            seeded = {side.name: images.seed_image(side.url, "bench/mount-source", "latest") for side in sides}
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                if args.load == "skopeo":
                    figures = skopeo_round(side, layouts, args.pushes, f"ab/r{r}")
                elif args.load in ("mounts", "tags"):
                    figures = metadata_round(side, args.load, args.count, r, seeded[side.name])
                else:
                    figures = blobs_round(side, args.load, args.count, f"ab/r{r}")
                rounds[side.name].append(figures)
            loads.append(os.getloadavg()[0])
    finally:
        for side in sides:
            side.stop()
    names = ["push s", f"{BATCH} at once s", "CPU/push ms", f"CPU/push ms, {BATCH} at once"]
    if args.load in ("mounts", "tags"):
        names = ["CPU/request µs", "requests/s"]
    elif args.load != "skopeo":
        names = ["CPU/blob µs", "blobs/s"]
    for name, per_round in rounds.items():
        columns = []
        for i, figure in enumerate(names):
            values = [round(f[i], 3 if i == 0 else 2) for f in per_round]
            columns.append(f"{figure} {values} median {statistics.median(values)}")
        print(f"{name}: " + " | ".join(columns))
    print(f"load average (1 min) before and after each round: {[round(x, 1) for x in loads]}")


if __name__ == "__main__":
    main()
