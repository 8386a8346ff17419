"""Races, dropped clients, restarts and worker hops: what a registry under real use must survive."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from registry_api import (
    assert_error,
    error_codes,
    get_manifest,
    image_manifest,
    on_distribution,
    push,
    push_blob,
    random_bytes,
    raw_request,
    sha256,
    start_upload,
    unique_repo,
    with_params,
    xfail_on_distribution,
)
from registry_process import RegistryProcess

OCTETS = {"Content-Type": "application/octet-stream"}
THREADS = 8


def _patch(client: httpx.Client, location: str, chunk: bytes, start: int) -> httpx.Response:
    headers = {**OCTETS, "Content-Range": f"{start}-{start + len(chunk) - 1}"}
    return client.patch(location, content=chunk, headers=headers)


def _recorded_size(status: httpx.Response) -> int:
    """Bytes the registry holds for an upload, from the `Range: 0-<last>` of a status answer."""
    match = re.fullmatch(r"0-(\d+)", status.headers["Range"])
    assert match, status.headers["Range"]
    return int(match.group(1)) + 1


def _pull_blob(client: httpx.Client, repo: str, data: bytes) -> None:
    got = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
    assert got.status_code == 200, got.text
    assert got.content == data


def _in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(work, range(count)))


def test_concurrent_pushes_of_the_same_blob(client: httpx.Client) -> None:
    repo, data = unique_repo("race"), random_bytes(3 * 1024 * 1024 + 17)

    def monolithic() -> int:
        location = start_upload(client, repo)
        return client.put(with_params(location, digest=sha256(data)), content=data, headers=OCTETS).status_code

    def chunked() -> int:
        location = start_upload(client, repo)
        half = len(data) // 2
        response = _patch(client, location, data[:half], 0)
        assert response.status_code == 202, response.text
        response = _patch(client, response.headers["Location"], data[half:], half)
        assert response.status_code == 202, response.text
        return client.put(with_params(response.headers["Location"], digest=sha256(data))).status_code

    statuses = _in_threads(THREADS, lambda i: monolithic() if i % 2 else chunked())
    assert statuses == [201] * THREADS
    _pull_blob(client, repo, data)


def test_concurrent_pushes_of_the_same_tag(client: httpx.Client) -> None:
    repo = unique_repo("race")
    manifests = [image_manifest(client, repo) for _ in range(THREADS)]

    def push_tag(i: int) -> int:
        manifest = manifests[i]
        response = client.put(
            f"/v2/{repo}/manifests/contested", content=manifest.body, headers={"Content-Type": manifest.media_type}
        )
        return response.status_code

    assert _in_threads(THREADS, push_tag) == [201] * THREADS
    final = get_manifest(client, repo, "contested")
    assert final.status_code == 200
    winners = [m for m in manifests if m.body == final.content]
    assert len(winners) == 1, "the tag must point at one whole pushed manifest"
    assert final.headers["Docker-Content-Digest"] == winners[0].digest
    for manifest in manifests:  # every pushed manifest stays pullable by digest
        assert get_manifest(client, repo, manifest.digest).content == manifest.body
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["contested"]


def _send_partial(host: str, head: str, body: bytes) -> None:
    """Announce a body, send only part of it, and vanish."""
    address, port = host.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
    # closed here, mid-body


def _resume(client: httpx.Client, location: str, data: bytes, least: int, most: int) -> httpx.Response:
    """Send the rest of `data` from where the session stands, once a request cut off mid-body has let go of it.

    The server releases its claim on the session only after the broken request has settled, which may come after
    the client has vanished: until then the next chunk is refused with 416. Each round reads the status again
    (it must hold between `least` and `most` bytes), for at most a few seconds; a claim that is never released
    still fails the test.
    """
    deadline = time.monotonic() + 10
    while True:
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.content == b""
        recorded = _recorded_size(status)
        assert least <= recorded <= most, "the session must hold the first chunk, and nothing that was never sent"
        response = _patch(client, status.headers["Location"], data[recorded:], recorded)
        if response.status_code != 416 or time.monotonic() > deadline:
            if response.status_code == 202:
                assert response.headers["Range"] == f"0-{len(data) - 1}", "the session holds all of `data` now"
            return response
        assert least <= _recorded_size(response) <= most, "a refused chunk adds nothing, and says where to resume"
        time.sleep(0.05)


@xfail_on_distribution("loses the session (404 BLOB_UPLOAD_INVALID, not BLOB_UPLOAD_UNKNOWN)")
def test_client_disconnecting_mid_patch(registry: RegistryProcess, client: httpx.Client) -> None:
    repo, data = unique_repo("drop"), random_bytes(1024 * 1024)
    location = start_upload(client, repo)
    first = _patch(client, location, data[:100_000], 0)
    assert first.status_code == 202
    assert first.headers["Range"] == "0-99999"
    location = first.headers["Location"]
    upload_uuid = first.headers["Docker-Upload-UUID"]
    path = httpx.URL(location).raw_path.decode()
    sent = 300_000
    _send_partial(
        registry.host,
        f"PATCH {path} HTTP/1.1\r\nHost: {registry.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: 100000-{len(data) - 1}\r\nContent-Length: {len(data) - 100_000}\r\n\r\n",
        data[100_000:sent],
    )

    assert client.get("/v2/").status_code == 200
    for digest in (sha256(data), sha256(data[:sent])):
        assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404

    if on_distribution():  # it forgets the session; the spec's answer for that is 404 BLOB_UPLOAD_UNKNOWN
        status = client.get(location)
        if status.status_code == 404:
            assert "BLOB_UPLOAD_UNKNOWN" in error_codes(status)
            return
    response = _resume(client, location, data, 100_000, sent)
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{len(data) - 1}"
    assert response.headers["Docker-Upload-UUID"] == upload_uuid
    status = client.get(response.headers["Location"])
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(data) - 1}"
    put = client.put(with_params(response.headers["Location"], digest=sha256(data)))
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == sha256(data)
    _pull_blob(client, repo, data)


def test_client_disconnecting_mid_monolithic_put(registry: RegistryProcess, client: httpx.Client) -> None:
    repo, data = unique_repo("drop"), random_bytes(1024 * 1024)
    location = start_upload(client, repo)
    url = with_params(location, digest=sha256(data))
    _send_partial(
        registry.host,
        f"PUT {url.raw_path.decode()} HTTP/1.1\r\nHost: {registry.host}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n",
        data[:200_000],
    )
    assert client.get("/v2/").status_code == 200
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/blobs/{sha256(data)}"), 404, "BLOB_UNKNOWN")
    push_blob(client, repo, data)  # the same content can still be pushed properly
    _pull_blob(client, repo, data)


def test_client_disconnecting_mid_manifest_put(registry: RegistryProcess, client: httpx.Client) -> None:
    repo = unique_repo("drop")
    manifest = image_manifest(client, repo)
    _send_partial(
        registry.host,
        f"PUT /v2/{repo}/manifests/half HTTP/1.1\r\nHost: {registry.host}\r\n"
        f"Content-Type: {manifest.media_type}\r\nContent-Length: {len(manifest.body)}\r\n\r\n",
        manifest.body[: len(manifest.body) // 2],
    )
    assert client.get("/v2/").status_code == 200
    assert_error(get_manifest(client, repo, "half"), 404, "MANIFEST_UNKNOWN")
    assert get_manifest(client, repo, manifest.digest).status_code == 404
    push(client, repo, manifest, "half")
    assert get_manifest(client, repo, "half").content == manifest.body


def test_upload_survives_a_restart(make_registry: Callable[..., RegistryProcess]) -> None:
    # Distribution signs its upload state with http.secret, random per start unless configured.
    server = make_registry(extra_config={"http": {"secret": "restart-test"}} if on_distribution() else {})
    repo = unique_repo("restart")
    chunks = [random_bytes(200_000) for _ in range(4)]
    data = b"".join(chunks)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, repo)
        offset = 0
        for chunk in chunks[:2]:
            response = _patch(client, location, chunk, offset)
            assert response.status_code == 202, response.text
            offset += len(chunk)
            assert response.headers["Range"] == f"0-{offset - 1}"
            location = response.headers["Location"]
        upload_uuid = response.headers["Docker-Upload-UUID"]

    server.restart()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Docker-Upload-UUID"] == upload_uuid
        recorded = _recorded_size(status)
        assert recorded == offset
        location = status.headers["Location"]
        rest = data[recorded:]
        for start in range(0, len(rest), 150_000):
            piece = rest[start : start + 150_000]
            response = _patch(client, location, piece, recorded + start)
            assert response.status_code == 202, response.text
            assert response.headers["Range"] == f"0-{recorded + start + len(piece) - 1}"
            location = response.headers["Location"]
        assert _recorded_size(client.get(location)) == len(data)
        put = client.put(with_params(location, digest=sha256(data)))
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == sha256(data)
        _pull_blob(client, repo, data)


def test_chunks_on_fresh_connections_reach_every_worker(client: httpx.Client) -> None:
    """Each PATCH on a new connection: with two workers sharing the port, chunks land on either of them."""
    repo = unique_repo("hop")
    chunks = [random_bytes(20_000 + i) for i in range(40)]
    data = b"".join(chunks)
    location = start_upload(client, repo)
    offset = 0
    for chunk in chunks:
        headers = {**OCTETS, "Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Connection": "close"}
        response = client.patch(location, content=chunk, headers=headers)
        assert response.status_code == 202, response.text
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = response.headers["Location"]
        assert client.get(location, headers={"Connection": "close"}).headers["Range"] == f"0-{offset - 1}"
    put = client.put(with_params(location, digest=sha256(data)), headers={"Connection": "close"})
    assert put.status_code == 201, put.text
    _pull_blob(client, repo, data)


def test_streamed_patch_without_content_range(client: httpx.Client) -> None:
    """What docker does: one chunked-encoding PATCH with no Content-Range, then an empty PUT."""
    repo = unique_repo("stream")
    data = random_bytes(2 * 1024 * 1024 + 3)

    def body() -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    location = start_upload(client, repo)
    response = client.patch(location, content=body(), headers=OCTETS)
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{len(data) - 1}"
    put = client.put(with_params(response.headers["Location"], digest=sha256(data)))
    assert put.status_code == 201, put.text
    _pull_blob(client, repo, data)


def test_many_pushes_and_pulls_in_parallel(client: httpx.Client) -> None:
    """Different images pushed and pulled at once from many threads all come back whole."""

    def push_and_pull(i: int) -> None:
        repo = unique_repo(f"par{i}")
        manifest = image_manifest(client, repo, layers=3)
        push(client, repo, manifest, "v1")
        assert get_manifest(client, repo, "v1").content == manifest.body

    _in_threads(THREADS, push_and_pull)


@xfail_on_distribution("ignores Content-Range, so both racing chunks are appended")
def test_racing_chunks_on_one_session(client: httpx.Client) -> None:
    """Two clients send a chunk for the same offset at once: one is taken, the other refused, nothing mixed."""
    for _ in range(3):
        repo = unique_repo("race")
        location = start_upload(client, repo)
        chunks = [random_bytes(2 * 1024 * 1024) for _ in range(2)]
        statuses = _in_threads(2, lambda i: _slow_patch(client, location, chunks[i]).status_code)  # noqa: B023
        assert sorted(statuses) == [202, 416], statuses
        winner = chunks[statuses.index(202)]
        status = client.get(location)
        assert _recorded_size(status) == len(winner)
        put = client.put(with_params(status.headers["Location"], digest=sha256(winner)))
        assert put.status_code == 201, put.text
        _pull_blob(client, repo, winner)


def _slow_patch(client: httpx.Client, location: str, chunk: bytes) -> httpx.Response:
    """A chunk at offset 0 sent in slices over ~0.2 s, so that two of them are surely in flight together."""

    def slices() -> Iterator[bytes]:
        for start in range(0, len(chunk), 65536):
            time.sleep(0.006)
            yield chunk[start : start + 65536]

    headers = {**OCTETS, "Content-Range": f"0-{len(chunk) - 1}", "Content-Length": str(len(chunk))}
    return client.patch(location, content=slices(), headers=headers)


def test_large_blob_streams_both_ways(client: httpx.Client) -> None:
    """48 MiB in three chunks, pulled back whole and resumed from the middle with a Range request."""
    repo = unique_repo("large")
    chunk_size = 16 * 1024 * 1024
    chunks = [random_bytes(chunk_size) for _ in range(3)]
    digest = "sha256:" + _sha256_hex(chunks)
    location = start_upload(client, repo)
    for i, chunk in enumerate(chunks):
        response = _patch(client, location, chunk, i * chunk_size)
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
    assert client.put(with_params(location, digest=digest)).status_code == 201

    hasher = hashlib.sha256()
    size = 0
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == 3 * chunk_size
        for piece in response.iter_bytes():
            hasher.update(piece)
            size += len(piece)
    assert size == 3 * chunk_size
    assert "sha256:" + hasher.hexdigest() == digest

    middle = 3 * chunk_size // 2
    resumed = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={middle}-"})
    assert resumed.status_code == 206
    assert resumed.content == b"".join(chunks)[middle:]


def _sha256_hex(chunks: list[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /v2/\r\n\r\n",
            marks=xfail_on_distribution("Go's server answers HTTP/0.9 with a plain-text HTTP/1.1 400"),
            id="line-then-blank-line",
        ),
        pytest.param(
            b"GET /v2/\r\n",
            marks=xfail_on_distribution("Go's server answers HTTP/0.9 with a plain-text HTTP/1.1 400"),
            id="bare-line",
        ),
    ],
)
def test_http09_request_gets_an_http10_json_error_and_the_server_keeps_serving(
    registry: RegistryProcess, client: httpx.Client, request_bytes: bytes
) -> None:
    """A request line without a version is HTTP/0.9, whose responses have no status line at all: the registry
    refuses it in HTTP/1.0 (which every client can read) with the usual JSON error body, then closes. Sent
    several times on new connections, so both workers answer one."""
    for _ in range(6):
        answer = raw_request(registry.host, request_bytes, timeout=2)
        head, separator, body = answer.partition(b"\r\n\r\n")
        assert separator, f"no complete answer: {answer[:300]!r}"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.0 400 "), answer[:300]
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        assert headers["content-type"].startswith("application/json")
        assert int(headers["content-length"]) == len(body), "exactly one response, nothing after it"
        assert [error["code"] for error in json.loads(body)["errors"]] == ["UNSUPPORTED"]
        assert client.get("/v2/", headers={"Connection": "close"}).status_code == 200


def test_empty_bodies_again_and_again_on_one_connection(registry: RegistryProcess) -> None:
    """Requests with empty bodies, one after another on one keep-alive connection (so one worker): each is answered.
    aiohttp hands every empty body the same shared reader, whose end-of-body marker changes after its first use;
    a body loop that took the later marker for a chunk boundary spun the worker's event loop for ever."""
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    with httpx.Client(base_url=registry.url, timeout=10) as client:
        for _ in range(4):
            headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            response = client.put(f"/v2/{unique_repo()}/manifests/latest", content=b"", headers=headers)
            assert response.status_code == 400
            response = client.post(f"/v2/{unique_repo()}/blobs/uploads/", params={"digest": empty}, content=b"")
            assert response.status_code in (201, 202)
