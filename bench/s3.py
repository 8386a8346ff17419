"""docker-registry 3 on its S3 driver against CNCF Distribution 2.8 on its own, both on one moto server.

    python3 bench/s3.py [--rounds 3] [--blob-mib 128] [--layer-mib 8]

Each server gets its own bucket of one moto server on loopback (`pip install "moto[server]"`); Distribution runs
Debian's `/usr/bin/docker-registry` with `storage.s3.regionendpoint` pointing at moto. Both keep their defaults
otherwise: blob GETs are redirected to presigned S3 URLs, which the clients follow. Rounds interleave the servers,
so load from anything else on the machine hits both alike; the table gives the median seconds of each figure and
Distribution's time over ours (above 1: we are faster).

Figures: skopeo push and pull of a 3-layer image (`--layer-mib` random layers), and a `--blob-mib` blob uploaded
monolithically (POST, then one PUT with the body) and chunked (PATCHes of 16 MiB, then PUT), and downloaded (GET,
following the redirect to S3). moto keeps objects in memory, in Python: it is the bottleneck of every figure, so the
ratios say more than the seconds. The last figure is the servers' own part of a download: `wrk` asking for the blob
for `--redirect-seconds` (16 connections, redirects not followed), as the time of 1,000 answers (307 to S3).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import loadgen
import tests_path  # noqa: F401 - makes the tests' helpers importable

from e2e_images import OciLayout
from registry_api import with_params
from registry_process import RegistryProcess
from s3_server import MotoServer
from server_launch import DISTRIBUTION_BINARY

MiB = 1024 * 1024
CHUNK = 16 * MiB


def storage(moto: MotoServer, kind: str) -> dict[str, Any]:
    options = moto.options(moto.bucket(), rootdirectory="registry")
    if kind == "distribution":  # Distribution 2.8 forces path style itself when given an endpoint
        options.pop("forcepathstyle")
        options["v4auth"] = True
    return {"s3": options, "delete": {"enabled": True}}


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True, timeout=900)


def upload_monolithic(client: httpx.Client, repo: str, data: bytes, digest: str) -> None:
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    done = client.put(with_params(start.headers["Location"], digest=digest), content=data)
    assert done.status_code == 201, done.text


def upload_chunked(client: httpx.Client, repo: str, data: bytes, digest: str) -> None:
    answer = client.post(f"/v2/{repo}/blobs/uploads/")
    assert answer.status_code == 202, answer.text
    for start in range(0, len(data), CHUNK):
        piece = data[start : start + CHUNK]
        answer = client.patch(
            answer.headers["Location"],
            content=piece,
            headers={"Content-Range": f"{start}-{start + len(piece) - 1}", "Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 202, answer.text
    done = client.put(with_params(answer.headers["Location"], digest=digest))
    assert done.status_code == 201, done.text


def download(client: httpx.Client, repo: str, digest: str, size: int) -> None:
    total = 0
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}", follow_redirects=True) as response:
        assert response.status_code == 200, response.status_code
        for chunk in response.iter_raw(1024 * 1024):
            total += len(chunk)
    assert total == size, total


def redirects(url: str, seconds: int) -> float:
    """Seconds per 1,000 answers to GETs of a blob, redirects not followed (wrk counts a 307 as a success)."""
    result = loadgen.wrk_get(url, 16, seconds, "Accept: */*")
    assert result.failures == 0, result
    return 1000 / result.rps


def timed(action: Callable[..., object], *args: Any) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def rounds(
    servers: dict[str, RegistryProcess], work: Path, args: argparse.Namespace
) -> Iterator[tuple[str, str, float]]:
    """(figure, server, seconds) for every measure of every round, the servers taking turns."""
    for r in range(args.rounds):
        layout = OciLayout(work / f"layout{r}")
        layout.add_image("v1", layer_count=3, layer_size=args.layer_mib * MiB)
        data = os.urandom(args.blob_mib * MiB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob = f"{args.blob_mib} MiB blob"
        for name, server in servers.items():
            ref = f"docker://{server.host}/bench/image{r}:v1"
            yield "skopeo push, 3 layers", name, timed(skopeo, "copy", "--dest-tls-verify=false", layout.ref("v1"), ref)
            out = f"oci:{work / f'pulled-{name}-{r}'}:v1"
            yield "skopeo pull, 3 layers", name, timed(skopeo, "copy", "--src-tls-verify=false", ref, out)
            shutil.rmtree(work / f"pulled-{name}-{r}", ignore_errors=True)
            with httpx.Client(base_url=server.url, timeout=600) as client:
                repo, repo2 = (f"bench/blob{uuid.uuid4().hex[:8]}" for _ in range(2))
                yield f"{blob}, monolithic PUT", name, timed(upload_monolithic, client, repo, data, digest)
                yield f"{blob}, chunked PATCH", name, timed(upload_chunked, client, repo2, data, digest)
                yield f"{blob}, GET via redirect", name, timed(download, client, repo, digest, len(data))
                if args.redirect_seconds:
                    url = f"{server.url}/v2/{repo}/blobs/{digest}"
                    yield "1,000 blob GETs answered 307 (wrk)", name, redirects(url, args.redirect_seconds)
        shutil.rmtree(layout.path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blob-mib", type=int, default=128, help="64 to 512")
    parser.add_argument("--layer-mib", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redirect-seconds", type=int, default=5, help="0 leaves out the wrk figure")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of both servers and moto)")
    args = parser.parse_args()
    for tool in ("skopeo", "wrk", DISTRIBUTION_BINARY):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install skopeo wrk docker-registry")
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        moto = MotoServer(work / "moto").start()
        servers: dict[str, RegistryProcess] = {}
        try:
            for kind in ("ours", "distribution"):
                extra = {"log": {"level": "warn", "accesslog": {"disabled": True}}}
                # Distribution 2.8's AWS SDK panics when AWS_CA_BUNDLE is set (as on these machines) with its own
                # HTTP transport; empty, the SDK ignores it. Ours keeps it: a plain-HTTP endpoint never reads it.
                env = {"AWS_CA_BUNDLE": ""} if kind == "distribution" else {}
                servers[kind] = RegistryProcess(
                    work / kind,
                    kind=kind,
                    storage=storage(moto, kind),
                    workers=args.workers,
                    extra_config=extra,
                    env=env,
                ).start()
            times: dict[str, dict[str, list[float]]] = {}
            for figure, name, seconds in rounds(servers, work, args):
                times.setdefault(figure, {}).setdefault(name, []).append(seconds)
                print(f"  {figure:40} {name:13} {seconds:8.2f} s", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            moto.stop()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n| figure (median of {args.rounds}, seconds) | ours | Distribution 2.8 | Distribution / ours |")
    print("|---|---|---|---|")
    for figure, by_server in times.items():
        ours, theirs = statistics.median(by_server["ours"]), statistics.median(by_server["distribution"])
        print(f"| {figure} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
