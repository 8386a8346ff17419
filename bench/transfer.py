"""Big-blob figures: downloads (the splice client, the recv_into client, or `curl` processes writing to /dev/null),
uploads with the sendfile client, and the machine's own ceilings (page-cache reads, sha256) that give those figures
a scale.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rawhttp
from loadgen import require

MB = 1_000_000


def random_file(path: Path, size: int, piece: int = 8 * 1024 * 1024) -> None:
    """Written piece by piece: the benchmark never holds a blob in memory either."""
    with path.open("wb") as f:
        left = size
        while left:
            n = min(piece, left)
            f.write(os.urandom(n))
            left -= n


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def renew(path: Path) -> str:
    """Overwrite the first bytes so each upload is a new digest (no server may skip work on a blob it already
    has), keeping the rest in the page cache; returns the new digest."""
    with path.open("r+b") as f:
        f.write(os.urandom(32))
    return sha256_file(path)


def page_cache_mbps(path: Path) -> float:
    """`dd` from a warmed page cache: the fastest this machine can move the blob's bytes at all."""
    dd = ["dd", f"if={path}", "of=/dev/null", "bs=1M"]
    subprocess.run(dd, capture_output=True, check=True)
    out = subprocess.run(dd, capture_output=True, text=True, check=True).stderr
    m = re.search(r"^(\d+) bytes .* copied, ([\d.e-]+) s", out, re.M)
    if not m:
        raise RuntimeError(f"unexpected dd output: {out}")
    return int(m.group(1)) / float(m.group(2)) / MB


def durable_write_mbps(path: Path, directory: Path) -> float:
    """`dd` of the (cached) blob into a new file in `directory`, synced before dd exits: what storing the blob
    durably costs this disk and file system alone, the floor under any upload that is durable when acknowledged."""
    target = directory / f".durable-write-{os.getpid()}"
    dd = ["dd", f"if={path}", f"of={target}", "bs=1M", "conv=fsync"]
    try:
        out = subprocess.run(dd, capture_output=True, text=True, check=True).stderr
    finally:
        target.unlink(missing_ok=True)
    m = re.search(r"^(\d+) bytes .* copied, ([\d.e-]+) s", out, re.M)
    if not m:
        raise RuntimeError(f"unexpected dd output: {out}")
    return int(m.group(1)) / float(m.group(2)) / MB


def sha256_mbps(path: Path) -> float:
    """Hashing speed: the ceiling of any upload that verifies its digest."""
    start = time.perf_counter()
    sha256_file(path)
    return path.stat().st_size / (time.perf_counter() - start) / MB


def curl_get_mbps(url: str, streams: int, expect_bytes: int) -> float:
    """`streams` parallel curl processes, each downloading `url` whole; MB/s over the wall time of all of them."""
    curl = require("curl", "curl")
    argv = [curl, "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", url]
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(streams)]
    sizes = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"curl {url} failed with exit code {p.returncode}")
        sizes.append(int(out))
    elapsed = time.perf_counter() - start
    if any(s != expect_bytes for s in sizes):
        raise RuntimeError(f"curl {url} got {sizes} bytes, expected {expect_bytes} each")
    return sum(sizes) / elapsed / MB


def splice_read_mbps(path: Path) -> float:
    """The file spliced through a pipe into /dev/null, as the download client does with the socket: the kernel
    moves page references and copies nothing, so this is far above any read that delivers the bytes."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, rawhttp.PIPE_SIZE)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        with path.open("rb") as f:
            start = time.perf_counter()
            while n := os.splice(f.fileno(), w, rawhttp.PIPE_SIZE):
                while n:
                    n -= os.splice(r, null, n)
            elapsed = time.perf_counter() - start
    finally:
        for fd in (r, w, null):
            os.close(fd)
    return path.stat().st_size / elapsed / MB


def get_mbps(
    url: str, streams: int, expect_bytes: int, client: Callable[[str], int] = rawhttp.spliced_download
) -> float:
    """`streams` parallel downloads of `url`, by default by the splice client (threads: the GIL is released in
    the kernel); MB/s over the wall time of all of them. `rawhttp.download` (recv_into) is the other client."""
    with ThreadPoolExecutor(streams) as pool:
        start = time.perf_counter()
        sizes = list(pool.map(client, [url] * streams))
        elapsed = time.perf_counter() - start
    if any(s != expect_bytes for s in sizes):
        raise RuntimeError(f"GET {url} got {sizes} bytes, expected {expect_bytes} each")
    return sum(sizes) / elapsed / MB


def upload_mbps(base: str, repo: str, path: Path, chunk: int | None) -> float:
    """A fresh digest each time, dirty pages of earlier uploads flushed first so no run pays for another's."""
    digest = renew(path)
    os.sync()
    size = path.stat().st_size
    start = time.perf_counter()
    if chunk is None:
        rawhttp.upload_monolithic(base, repo, path, digest)
    else:
        rawhttp.upload_chunked(base, repo, path, digest, chunk)
    return size / (time.perf_counter() - start) / MB
