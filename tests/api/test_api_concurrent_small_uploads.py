"""Many small blob uploads at once, each creating its session's file in `uploads/` (a folder `uploads/<id>/` before
version-8 session ids) and pruning `uploads/` when it empties.

Under this load the filesystem driver once answered 500: one upload's prune removed the then-empty `uploads/`
between another upload creating it and creating `uploads/<id>` inside it (`os.makedirs` raised FileNotFoundError);
and, with the flat layout, between another upload's `mkdir` finding `uploads/` there and its look at what it found.
Every upload here must succeed (no 5xx, nor any other unexpected status) and every blob must come back byte for
byte. The race only shows while `uploads/` keeps emptying, which needs few uploads in flight: with 16 clients it
never empties. So the second test keeps 3 clients pushing monolithic uploads, the shortest-lived ones: on the
unfixed driver it failed in each of 7 runs, with 1 to 4 uploads answered 500 (a race of microseconds, so a run may
still miss it), while the first test, at 16 clients, passed there.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from registry_api import random_bytes, sha256, start_upload, unique_repo, with_params

OCTETS = {"Content-Type": "application/octet-stream"}

Upload = Callable[[httpx.Client, str, bytes], None]


def _expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    assert response.status_code in statuses, (
        f"{response.status_code} for {response.request.method} {response.request.url}: {response.text[:300]}"
    )
    return response


def _chunked(client: httpx.Client, repo: str, data: bytes) -> None:
    """POST, two PATCHes, then PUT ?digest= without a body."""
    location, half = start_upload(client, repo), len(data) // 2
    for start, chunk in ((0, data[:half]), (half, data[half:])):
        headers = {**OCTETS, "Content-Range": f"{start}-{start + len(chunk) - 1}"}
        location = _expect(client.patch(location, content=chunk, headers=headers), 202).headers["Location"]
    _expect(client.put(with_params(location, digest=sha256(data))), 201)


def _post_then_put(client: httpx.Client, repo: str, data: bytes) -> None:
    """POST, then the whole blob in the PUT ?digest=."""
    location = start_upload(client, repo)
    _expect(client.put(with_params(location, digest=sha256(data)), content=data, headers=OCTETS), 201)


def _monolithic_post(client: httpx.Client, repo: str, data: bytes) -> None:
    """The whole blob in the POST ?digest=; a registry may still answer 202 and want the PUT (the spec allows it)."""
    url, digest = f"/v2/{repo}/blobs/uploads/", sha256(data)
    response = _expect(client.post(url, params={"digest": digest}, content=data, headers=OCTETS), 201, 202)
    if response.status_code == 202:
        location = response.headers["Location"]
        _expect(client.put(with_params(location, digest=digest), content=data, headers=OCTETS), 201)


def _push_and_pull(client: httpx.Client, count: int, threads: int, ways: tuple[Upload, ...]) -> None:
    """Push `count` small blobs from `threads` threads, taking turns at `ways`, over 4 repositories; pull them."""
    repos = [unique_repo("small") for _ in range(4)]
    blobs = [random_bytes(512 + 37 * i) for i in range(count)]

    def upload(i: int) -> None:
        ways[i % len(ways)](client, repos[i % len(repos)], blobs[i])

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(upload, i) for i in range(count)]
    failures = [e for e in (f.exception() for f in futures) if e is not None]
    assert not failures, f"{len(failures)} of {count} uploads failed, the first: {failures[0]}"

    for i, data in enumerate(blobs):
        got = _expect(client.get(f"/v2/{repos[i % len(repos)]}/blobs/{sha256(data)}"), 200)
        assert got.content == data, f"blob {i} came back different"


def test_many_concurrent_small_uploads_all_succeed(client: httpx.Client) -> None:
    _push_and_pull(client, 200, 16, (_chunked, _post_then_put, _monolithic_post))


def test_small_uploads_while_the_uploads_directory_keeps_emptying(client: httpx.Client) -> None:
    _push_and_pull(client, 400, 3, (_monolithic_post,))
