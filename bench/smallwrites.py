"""Small-write loads as CI farms make them, from threads that each keep one connection alive: many small blobs
(POST, PATCH with the body, empty PUT `?digest=`, as skopeo and docker push; or POST and a PUT carrying the body),
new repositories by cross-repository mount plus a manifest PUT, and tag PUTs of an existing manifest.

The client is `rawhttp.Connection`: a request is one `sendall` and a response one or two `recv`s, far less CPU than
httpx would take on the two cores the server shares with it. Each item either succeeds or is counted as a failure
(unexpected status, broken connection: the thread reconnects and goes on); the caller flags a run with failures.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urljoin

import rawhttp
from images import SeededImage

T = TypeVar("T")

OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass
class WriteLoad:
    items: int
    """Items done: blobs pushed, repositories created, tags put."""
    requests: int
    """HTTP requests the items that succeeded took."""
    failures: int
    seconds: float
    """Wall time from the first request to the last answer."""
    first_error: str = ""

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


Action = Callable[[rawhttp.Connection, T], int]
"""Does one item on a connection and returns how many requests it took; raises rawhttp.HTTPError or OSError."""


class _Shared(Generic[T]):
    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self.next = itertools.count()
        self.lock = threading.Lock()
        self.done = self.requests = self.failures = 0
        self.first_error = ""

    def take(self) -> T | None:
        with self.lock:
            i = next(self.next)
        return self.items[i] if i < len(self.items) else None

    def record(self, requests: int | None, error: str = "") -> None:
        with self.lock:
            if requests is None:
                self.failures += 1
                self.first_error = self.first_error or error
            else:
                self.done += 1
                self.requests += requests


def run(base: str, items: Sequence[T], connections: int, action: Action[T], timeout: float = 60.0) -> WriteLoad:
    """`action` on every item, from `connections` threads with a keep-alive connection each, all connected before
    the clock starts."""
    shared = _Shared(items)
    ready = threading.Barrier(connections + 1)

    def worker() -> None:
        try:
            conn = rawhttp.Connection(base, timeout=timeout)
        except OSError:
            ready.abort()  # the main thread's wait raises instead of waiting for this thread for ever
            raise
        try:
            ready.wait()
            while (item := shared.take()) is not None:
                try:
                    shared.record(action(conn, item))
                except (rawhttp.HTTPError, OSError) as e:
                    shared.record(None, f"{type(e).__name__}: {e}")
                    conn.sock.close()
                    conn = rawhttp.Connection(base, timeout=timeout)
        finally:
            conn.sock.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return WriteLoad(shared.done, shared.requests, shared.failures, elapsed, shared.first_error)


def random_blobs(count: int, size: int) -> list[tuple[bytes, str]]:
    """Fresh random blobs with their digests: no server can skip one it has already."""
    blobs = []
    for _ in range(count):
        data = os.urandom(size)
        blobs.append((data, "sha256:" + hashlib.sha256(data).hexdigest()))
    return blobs


def blob_patch_put(base: str, repo: str) -> Action[tuple[bytes, str]]:
    """What skopeo and docker send for a blob the registry lacks: POST a session, PATCH the whole body (no
    Content-Range), then an empty PUT `?digest=` at the Location the PATCH answered with."""

    def push(conn: rawhttp.Connection, blob: tuple[bytes, str]) -> int:
        data, digest = blob
        location = rawhttp.start_upload(base, repo, conn)
        r = rawhttp.expect(conn.request(location, "PATCH", OCTETS, data), 202, f"PATCH {len(data)} bytes to {repo}")
        location = urljoin(location, r.header("location"))
        rawhttp.expect(conn.request(rawhttp.with_digest(location, digest), "PUT"), 201, f"closing PUT of {repo}")
        return 3

    return push


def blob_post_put(base: str, repo: str) -> Action[tuple[bytes, str]]:
    """POST a session, then one PUT `?digest=` carrying the body."""

    def push(conn: rawhttp.Connection, blob: tuple[bytes, str]) -> int:
        data, digest = blob
        location = rawhttp.start_upload(base, repo, conn)
        r = conn.request(rawhttp.with_digest(location, digest), "PUT", OCTETS, data)
        rawhttp.expect(r, 201, f"PUT {len(data)} bytes to {repo}")
        return 2

    return push


def mount_and_manifest(base: str, source: str, image: SeededImage) -> Action[str]:
    """A new repository from `image` in `source`: its config and layer mounted (`POST ?mount=&from=`, 201), then
    its manifest PUT under `latest`."""

    def create(conn: rawhttp.Connection, repo: str) -> int:
        for digest in (image.config, image.layer):
            url = f"{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={source}"
            rawhttp.expect(conn.request(url, "POST"), 201, f"mount of {digest} from {source} into {repo}")
        url = f"{base}/v2/{repo}/manifests/latest"
        r = conn.request(url, "PUT", {"Content-Type": image.media_type}, image.manifest)
        rawhttp.expect(r, 201, f"PUT manifest {repo}:latest")
        return 3

    return create


def tag_put(base: str, repo: str, image: SeededImage) -> Action[str]:
    """`image`'s manifest, already in `repo`, PUT under a new tag."""

    def put(conn: rawhttp.Connection, tag: str) -> int:
        r = conn.request(f"{base}/v2/{repo}/manifests/{tag}", "PUT", {"Content-Type": image.media_type}, image.manifest)
        rawhttp.expect(r, 201, f"PUT manifest {repo}:{tag}")
        return 1

    return put
