"""Before/after for blob GETs of small and mid-sized blobs: `python3 bench/ab_blob_gets.py --base DIR
[--distribution] [--rounds N] [--seconds S]`.

Runs our registry from the working tree and from another source tree (`DIR` holds its `src/` and `core/src/`,
e.g. `git archive <commit> src core/src | tar -x -C DIR`), optionally CNCF Distribution as a third side, pushes
the same blobs to each (20 KB, a layer of a small image; 1 MB), and loads each with `wrk` in interleaved rounds,
the order rotating: whole GETs from 32 connections, and one 206 `multipart/byteranges` GET asking for 8 ranges of
the 1 MB blob (as a zstd:chunked pull asks for a layer's missing files) from 8. Prints requests per second of
every round, their medians, and each side's median against the last side's. What a GET costs here is mostly the
request around the file (the kernel sends the bytes), so this is where how a handler opens and sends a file shows.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import loadgen
import rawhttp
import servers
from ab_writes import registry
from servers import Server

SIZES = {"20k": 20_000, "1m": 1_000_000}
RANGES = "bytes=" + ",".join(f"{start}-{start + 999}" for start in range(0, 1_000_000, 125_000))
"""Eight 1,000-byte windows spread over the 1 MB blob."""


def loads(server: Server, digests: dict[str, str]) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """Each load's URL, connections and extra headers."""
    url = f"{server.url}/v2/bench/blobs/blobs/"
    return {
        "GET 20 KB": (url + digests["20k"], 32, ()),
        "GET 1 MB": (url + digests["1m"], 32, ()),
        "8 ranges of 1 MB": (url + digests["1m"], 8, (f"Range: {RANGES}",)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True, help="a source tree holding src/ and core/src/")
    parser.add_argument("--distribution", action="store_true", help="CNCF Distribution as a third side")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    args = parser.parse_args()
    base = args.base.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="ab-blob-gets-"))
    sides = [registry("base", tmp, f"{base / 'src'}:{base / 'core' / 'src'}"), registry("this", tmp, None)]
    if args.distribution:
        sides.append(servers.distribution(tmp / "distribution"))
    blobs = {name: os.urandom(size) for name, size in SIZES.items()}
    digests = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    results: dict[tuple[str, str], list[float]] = {}
    for side in sides:
        side.start()
    try:
        for side in sides:
            for name, data in blobs.items():
                rawhttp.put_blob(side.url, "bench/blobs", data, digests[name])
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for load in loads(sides[0], digests):
                for side in order:
                    url, connections, headers = loads(side, digests)[load]
                    result = loadgen.wrk_get(url, connections, args.seconds, "Accept: */*", *headers)
                    if result.failures:
                        raise RuntimeError(f"{side.name}, {load}: {result.failures} failed requests")
                    results.setdefault((load, side.name), []).append(result.rps)
            print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for side in sides:
            side.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    last = sides[-1].name
    for (load, name), rates in results.items():
        median = statistics.median(rates)
        against = median / statistics.median(results[(load, last)])
        print(f"{load:17} {name:12}: req/s {[round(x) for x in rates]} median {median:.0f} ({against:.2f}x {last})")


if __name__ == "__main__":
    main()
