"""The legacy v1 API's figures, and the check that serving it costs v2 nothing: `python3 bench/v1.py [--quick]`.

Two of our registries run side by side, one with `v1.enabled: true` (the default), one with it off, holding the same
image (pushed through v1 into the first, its bridged manifest and blobs copied through v2 into the second). In
interleaved rounds it measures, as `run.py` does:

- v2 manifest GET by tag on both (`wrk`, 64 connections): the v1 routes must not slow v2 routing;
- v1 image json GET and v1 layer GET (a 1 MiB layer, sendfile) on the first;
- a v1 push of a 32 MiB gzip layer (json, layer, checksum; the layer hashed three ways as it streams in) and its
  pull, in MB/s.

CNCF Distribution has no v1 API, so there is no reference here; `run.py` keeps that comparison for v2.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import loadgen
import servers
import tests_path  # noqa: F401 - makes the test helpers importable

from oci_content import DOCKER_MANIFEST
from v1_engine import expect, image, push, push_image

ACCEPT = f"Accept: {DOCKER_MANIFEST}"


def _copy_through_v2(source: str, target: str, repository: str) -> None:
    """The bridged image of `source` pushed into `target` through v2 (blobs, then the manifest by tag)."""
    headers = {"Accept": DOCKER_MANIFEST}
    manifest = expect(httpx.get(f"{source}/v2/{repository}/manifests/latest", headers=headers), 200).content
    document = json.loads(manifest)
    with httpx.Client(base_url=target, timeout=60) as client:
        for descriptor in [document["config"], *document["layers"]]:
            data = expect(httpx.get(f"{source}/v2/{repository}/blobs/{descriptor['digest']}"), 200).content
            location = expect(client.post(f"/v2/{repository}/blobs/uploads/"), 202).headers["Location"]
            separator = "&" if "?" in location else "?"
            expect(client.put(f"{location}{separator}digest={descriptor['digest']}", content=data), 201)
        put = client.put(
            f"/v2/{repository}/manifests/latest", content=manifest, headers={"Content-Type": DOCKER_MANIFEST}
        )
        expect(put, 201)


def _push_pull_mb_s(url: str, size: int) -> tuple[float, float]:
    """One v1 push and one pull of a fresh image with a `size`-byte layer of random bytes: MB/s each way."""
    pushed = image({})
    pushed.layer = gzip.compress(os.urandom(size), compresslevel=1)
    with httpx.Client(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        push_image(client, pushed)
        pushing = time.perf_counter() - start
        start = time.perf_counter()
        with client.stream("GET", f"/v1/images/{pushed.id}/layer") as answer:
            received = sum(len(chunk) for chunk in answer.iter_raw(1024 * 1024))
        pulling = time.perf_counter() - start
    assert received == len(pushed.layer)
    return len(pushed.layer) / pushing / 1e6, received / pulling / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s loads, 2 rounds, an 8 MiB layer")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    seconds = 3 if args.quick else 10
    rounds = args.rounds or (2 if args.quick else 3)
    layer_size = (8 if args.quick else 32) * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-v1-") as scratch:
        on = servers.ours(Path(scratch) / "v1-on", args.workers)
        off = servers.ours(Path(scratch) / "v1-off", args.workers)
        assert off.config is not None
        off.config["v1"] = {"enabled": False}
        off.name = "v1 off"
        started: list[servers.Server] = []
        try:
            for server in (on, off):
                started.append(server.start())
            small = image({"bench": os.urandom(1024 * 1024)}, compression="none")
            with httpx.Client(base_url=on.url, timeout=60) as client:
                push(client, "bench/v1", [small])
            _copy_through_v2(on.url, off.url, "bench/v1")
            figures: dict[str, list[float]] = {}
            for _ in range(rounds):
                for name, server in (("v2 manifest GET, v1 on", on), ("v2 manifest GET, v1 off", off)):
                    result = loadgen.wrk_get(f"{server.url}/v2/bench/v1/manifests/latest", 64, seconds, ACCEPT)
                    assert result.failures == 0, name
                    figures.setdefault(f"{name} (req/s)", []).append(result.rps)
                json_load = loadgen.wrk_get(f"{on.url}/v1/images/{small.id}/json", 64, seconds, "Accept: */*")
                layer_load = loadgen.wrk_get(f"{on.url}/v1/images/{small.id}/layer", 16, seconds, "Accept: */*")
                assert json_load.failures == layer_load.failures == 0
                figures.setdefault("v1 image json GET (req/s)", []).append(json_load.rps)
                figures.setdefault("v1 1 MiB layer GET (req/s)", []).append(layer_load.rps)
                pushed, pulled = _push_pull_mb_s(on.url, layer_size)
                figures.setdefault(f"v1 push, {layer_size >> 20} MiB layer (MB/s)", []).append(pushed)
                figures.setdefault(f"v1 layer pull, {layer_size >> 20} MiB (MB/s)", []).append(pulled)
        finally:
            for server in started:
                server.stop()
    width = max(len(name) for name in figures)
    print(f"{'figure':<{width}}  median  (rounds)")
    for name, values in figures.items():
        rounded = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:<{width}}  {statistics.median(values):>8,.0f}  ({rounded})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
