"""The registry on the S3 driver, against a real moto server process: start-up checks, redirects to presigned URLs,
a chunked upload continued by another node, and skopeo pushing and pulling through redirects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from docker_registry.core import exceptions
from docker_registry.drivers.s3 import Driver
from e2e_images import OciLayout
from e2e_tools import require, run
from registry_api import push_blob, random_bytes, sha256, start_upload, unique_repo, with_params
from registry_process import RegistryProcess, free_port, implementation
from s3_server import MotoServer, shared_server

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the S3 driver is ours")

MiB = 1024 * 1024


@pytest.fixture
def moto() -> MotoServer:
    return shared_server()


def s3_storage(moto: MotoServer, **options: Any) -> dict[str, Any]:
    return {"s3": moto.options(moto.bucket(), rootdirectory="registry", **options), "delete": {"enabled": True}}


def serve_exit(tmp_path: Path, storage: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Start `serve` with `storage` and expect it to stop at once."""
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump({"version": 0.1, "storage": storage, "http": {"addr": f"127.0.0.1:{free_port()}"}})
    )
    return subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "serve", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


# --- start-up -------------------------------------------------------------------------------------------------
def test_missing_bucket_exits_2_naming_the_key(moto: MotoServer, tmp_path: Path) -> None:
    storage = {"s3": moto.options("no-such-bucket-here")}
    result = serve_exit(tmp_path, storage)
    assert result.returncode == 2, result.stderr
    assert "storage.s3.bucket" in result.stderr
    assert "no-such-bucket-here" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("chunksize", 1024), ("storageclass", "NO_SUCH_CLASS"), ("regionendpoint", "ftp://x"), ("secure", "maybe")],
)
def test_bad_option_exits_2_naming_the_key(moto: MotoServer, tmp_path: Path, option: str, value: object) -> None:
    storage = {"s3": {**moto.options(moto.bucket()), option: value}}
    result = serve_exit(tmp_path, storage)
    assert result.returncode == 2, result.stderr
    assert f"storage.s3.{option}" in result.stderr


def test_unreachable_endpoint_exits_2_naming_the_key(moto: MotoServer, tmp_path: Path) -> None:
    storage = {"s3": {**moto.options("bucket"), "regionendpoint": f"http://127.0.0.1:{free_port()}"}}
    result = serve_exit(tmp_path, storage)
    assert result.returncode == 2, result.stderr
    assert "storage.s3.regionendpoint" in result.stderr


def test_missing_bucket_option_exits_2(tmp_path: Path) -> None:
    result = serve_exit(tmp_path, {"s3": {"region": "us-east-1"}})
    assert result.returncode == 2, result.stderr
    assert "storage.s3.bucket" in result.stderr


# --- redirects ------------------------------------------------------------------------------------------------
def test_blob_get_redirects_to_a_presigned_url_and_head_does_not(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer
) -> None:
    server = make_registry(storage=s3_storage(moto), workers=1)  # one worker: its presigned URLs, reused
    repo, data = unique_repo("s3"), random_bytes(300_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, repo, data)
        got = client.get(f"/v2/{repo}/blobs/{digest}")
        assert got.status_code == 307, got.text
        location = got.headers["Location"]
        assert location.startswith(moto.endpoint)
        assert "X-Amz-Signature=" in location
        assert got.headers["Docker-Content-Digest"] == digest
        assert httpx.get(location, timeout=30).content == data  # what a client following the redirect gets
        time.sleep(1.1)  # a URL signed afresh would carry a later X-Amz-Date
        again = client.get(f"/v2/{repo}/blobs/{digest}")  # the URL is reused for 5 of its 20 minutes
        assert again.status_code == 307
        assert again.headers["Location"] == location

        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(data))


def test_redirect_disabled_serves_bytes_and_ranges(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer
) -> None:
    server = make_registry(storage={**s3_storage(moto), "redirect": {"disable": True}})
    repo, data = unique_repo("s3"), random_bytes(300_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, repo, data)
        got = client.get(f"/v2/{repo}/blobs/{digest}")
        assert got.status_code == 200
        assert got.content == data
        part = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == data[1000:2000]


# --- a chunked upload across nodes ----------------------------------------------------------------------------
def test_chunked_upload_alternating_between_two_nodes(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer, tmp_path: Path
) -> None:
    """Two registry processes on one bucket and one database: chunks of 3 MiB (under S3's 5 MiB part minimum) and
    7 MiB alternate between them; the blob is whole and verified, the upload area is gone."""
    storage = {**s3_storage(moto, chunksize=5 * MiB), "redirect": {"disable": True}}
    database = {"database": {"url": f"sqlite:///{tmp_path / 'shared.db'}"}}
    nodes = [make_registry(storage=storage, extra_config=database, workers=1) for _ in range(2)]
    repo = unique_repo("s3")
    chunks = [random_bytes(n) for n in (3 * MiB, 7 * MiB, 1 * MiB, 6 * MiB, 12345)]
    data = b"".join(chunks)
    clients = [httpx.Client(base_url=node.url, timeout=60) for node in nodes]
    try:
        location = start_upload(clients[0], repo)
        offset = 0
        for i, chunk in enumerate(chunks):
            headers = {
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Type": "application/octet-stream",
            }
            answer = clients[i % 2].patch(location, content=chunk, headers=headers)
            assert answer.status_code == 202, answer.text
            offset += len(chunk)
            assert answer.headers["Range"] == f"0-{offset - 1}"
            location = answer.headers["Location"]
        wrong = clients[1].put(with_params(location, digest=sha256(data + b"x")))
        assert wrong.status_code == 400, wrong.text  # every byte is verified: a wrong digest is refused
        location = start_upload(clients[1], repo)
        for i, chunk in enumerate(chunks):
            answer = clients[(i + 1) % 2].patch(location, content=chunk)
            assert answer.status_code == 202, answer.text
            location = answer.headers["Location"]
        done = clients[0].put(with_params(location, digest=sha256(data)))
        assert done.status_code == 201, done.text
        for client in clients:
            got = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
            assert got.status_code == 200
            assert got.content == data
    finally:
        for client in clients:
            client.close()


def test_upload_finished_on_one_node_is_copied_not_downloaded(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """A chunked upload is one S3 multipart upload, completed and then copied server-side to its blob key: the S3
    server's request log shows one CreateMultipartUpload for the upload's key, no UploadPartCopy into it, and the
    only reads of the upload's bytes are of the tail under S3's 5 MiB part minimum that a chunk left (the first
    one's 6 MiB make a 5 MiB part and a tail of about 1 MiB), prepended to the next part; the node kept the running
    hash, so nothing is read back to verify it, and the blob's key is written by a copy and never read."""
    moto = MotoServer(tmp_path / "moto").start()
    try:
        server = make_registry(storage={**s3_storage(moto, chunksize=5 * MiB), "redirect": {"disable": True}})
        repo, data = unique_repo("s3"), random_bytes(11 * MiB)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            location = start_upload(client, repo)
            for start, stop in ((0, 6 * MiB), (6 * MiB, 10 * MiB), (10 * MiB, len(data))):
                answer = client.patch(location, content=data[start:stop])
                assert answer.status_code == 202, answer.text
                location = answer.headers["Location"]
            assert client.put(with_params(location, digest=sha256(data))).status_code == 201
        upload_key = f"/registry/uploads/{location.split('?')[0].rstrip('/').rsplit('/', 1)[1]}/data"
        log = (tmp_path / "moto" / "moto.log").read_text().splitlines()
        requests = [line.split('"')[1] for line in log if line.count('"') >= 2]
        on_upload = [r.split()[0] + " " + r.split()[1].split("/", 2)[2] for r in requests if upload_key in r]
        assert sum(r.endswith("/data?uploads") for r in on_upload) == 1, on_upload  # one multipart upload
        tail_reads = [r for r in on_upload if r.startswith("GET ") and "?" not in r]
        assert 1 <= len(tail_reads) <= 2, on_upload  # at most one per later chunk; a read to verify would be more
        assert not any("x-amz-copy-source" in r for r in on_upload)
        blob_key = f"/registry/blobs/sha256/{sha256(data)[7:9]}/{sha256(data)[7:]}/data"
        assert any(r.startswith("PUT ") and blob_key in r for r in requests)
        assert not any(r.startswith("GET ") and blob_key in r for r in requests)
    finally:
        moto.stop()


def send_whole(client: httpx.Client, repo: str, data: bytes, digest: str, how: str) -> httpx.Response:
    """A blob in one request: a session's closing PUT (`put`) or a POST with `?digest=` (`post`)."""
    if how == "put":
        return client.put(with_params(start_upload(client, repo), digest=digest), content=data)
    return client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)


@pytest.mark.parametrize(("how", "metrics"), [("put", False), ("post", False), ("put", True)])
def test_a_blob_sent_whole_goes_straight_to_its_key_once_verified(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, how: str, metrics: bool
) -> None:
    """The bytes go to the blob's key as one multipart upload, completed only once they matched the digest; nothing
    is written to the upload area, copied or read back. Also with metrics on (the driver is then wrapped)."""
    moto = MotoServer(tmp_path / "moto").start()
    try:
        storage = s3_storage(moto, chunksize=5 * MiB)
        debug = {"http": {"debug": {"addr": f"127.0.0.1:{free_port()}", "prometheus": {"enabled": True}}}}
        server = make_registry(
            storage={**storage, "redirect": {"disable": True}}, extra_config=debug if metrics else {}
        )
        repo, data = unique_repo("s3"), random_bytes(11 * MiB)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert send_whole(client, repo, data, sha256(data), how).status_code == 201
            assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
        log = (tmp_path / "moto" / "moto.log").read_text().splitlines()
        requests = [line.split('"')[1] for line in log if line.count('"') >= 2]
        assert not any("/registry/uploads/" in r for r in requests), requests
        assert not any("x-amz-copy-source" in r for r in requests)
        blob_key = f"/registry/blobs/sha256/{sha256(data)[7:9]}/{sha256(data)[7:]}/data"
        assert sum(r.startswith("POST ") and blob_key + "?uploads" in r for r in requests) == 1, requests
        parts = [r for r in requests if r.startswith("PUT ") and blob_key in r and "partNumber=" in r]
        assert len(parts) >= 2, requests  # sent on as it arrived (5 MiB parts), never held whole
        assert open_multipart_uploads(storage["s3"]) == []
    finally:
        moto.stop()


@pytest.mark.parametrize("how", ["put", "post"])
def test_a_blob_sent_whole_with_a_wrong_digest_leaves_nothing(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer, how: str
) -> None:
    storage = s3_storage(moto, chunksize=5 * MiB)
    bucket = storage["s3"]["bucket"]
    server = make_registry(storage={**storage, "redirect": {"disable": True}})
    repo, data = unique_repo("s3"), random_bytes(11 * MiB)
    claimed = sha256(data + b"!")  # never the digest of `data`
    with httpx.Client(base_url=server.url, timeout=60) as client:
        answer = send_whole(client, repo, data, claimed, how)
        assert answer.status_code == 400, answer.text
        assert "DIGEST_INVALID" in answer.text
        assert client.head(f"/v2/{repo}/blobs/{claimed}").status_code == 404
        if how == "put":  # the session ended, as on every digest mismatch
            assert client.get(answer.request.url.copy_with(query=None)).status_code == 404
    assert moto.keys(bucket, "registry/blobs/") == []
    assert open_multipart_uploads(storage["s3"]) == []


def test_a_blob_sent_whole_cut_short_leaves_the_session_to_send_again(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer
) -> None:
    storage = s3_storage(moto, chunksize=5 * MiB)
    bucket = storage["s3"]["bucket"]
    server = make_registry(storage={**storage, "redirect": {"disable": True}})
    repo, data = unique_repo("s3"), random_bytes(11 * MiB)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = start_upload(client, repo)
        target = with_params(location, digest=sha256(data))
        head = (
            f"PUT {target.raw_path.decode()} HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        with socket.create_connection(server.host.rsplit(":", 1)) as sock:  # 7 of 11 MiB, then hang up
            sock.sendall(head.encode() + data[: 7 * MiB])
        deadline = time.monotonic() + 30
        while open_multipart_uploads(storage["s3"]) and time.monotonic() < deadline:
            time.sleep(0.2)  # the server notices the broken body and aborts what it had sent on
        assert open_multipart_uploads(storage["s3"]) == []
        assert moto.keys(bucket, "registry/blobs/") == []
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == "0-0"  # nothing stored: the client sends the whole blob again
        assert client.put(target, content=data).status_code == 201
        assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_a_node_killed_mid_upload_leaves_a_session_another_node_finishes(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer, tmp_path: Path
) -> None:
    """A node is killed (SIGKILL) while it receives a chunk: its parts are in S3, its memory is gone. Another node
    answers the upload's status with the size the session's state recorded (no more than one part behind what
    reached the dead node), takes the rest from there and finishes; the blob is whole and verified, and no
    multipart upload is left open."""
    storage = {**s3_storage(moto, chunksize=5 * MiB), "redirect": {"disable": True}}
    database = {"database": {"url": f"sqlite:///{tmp_path / 'shared.db'}"}}
    a, b = (make_registry(storage=storage, extra_config=database, workers=1) for _ in range(2))
    repo, data = unique_repo("s3-kill"), random_bytes(24 * MiB)
    with httpx.Client(base_url=a.url, timeout=60) as client:
        location = start_upload(client, repo)
        first = client.patch(location, content=data[: 6 * MiB], headers={"Content-Range": f"0-{6 * MiB - 1}"})
        assert first.status_code == 202, first.text
        location = first.headers["Location"]
    upload_id = location.split("?")[0].rstrip("/").rsplit("/", 1)[1]
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    path = httpx.URL(location).raw_path.decode()
    sock.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: {a.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: {6 * MiB}-{len(data) - 1}\r\nContent-Length: {len(data) - 6 * MiB}\r\n\r\n".encode()
    )
    sock.sendall(data[6 * MiB : 20 * MiB])  # the rest never comes
    deadline = time.monotonic() + 60
    while session_size(storage["s3"], f"uploads/{upload_id}/data") < 10 * MiB:  # a part of the chunk is in S3
        assert time.monotonic() < deadline, "the second PATCH never reached S3"
        time.sleep(0.05)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    a.proc = None
    sock.close()
    with httpx.Client(base_url=b.url, timeout=60) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        offset = int(status.headers["Range"].split("-")[1]) + 1
        assert 10 * MiB <= offset <= 20 * MiB
        done = client.put(
            with_params(location, digest=sha256(data)),
            content=data[offset:],
            headers={"Content-Range": f"{offset}-{len(data) - 1}", "Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    assert open_multipart_uploads(storage["s3"]) == []


def test_an_expired_upload_is_purged_with_its_multipart_upload(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer
) -> None:
    """Upload purging ends a session nobody finished: its state object and its open multipart upload (the parts
    of its first chunk, 6 MiB) both go, so nothing is left in the bucket to be billed."""
    storage = s3_storage(moto, chunksize=5 * MiB)
    storage["maintenance"] = {"uploadpurging": {"enabled": True, "age": "2s", "interval": "1s"}}
    server = make_registry(storage=storage, extra_config={"gc": {"enabled": False, "delay": "0s"}})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = start_upload(client, unique_repo("s3-purge"))
        assert client.patch(location, content=random_bytes(6 * MiB + 1)).status_code == 202
        upload_id = location.split("?")[0].rstrip("/").rsplit("/", 1)[1]
        assert len(open_multipart_uploads(storage["s3"])) == 1
        deadline = time.monotonic() + 30
        while client.get(location).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.get(location).status_code == 404
    while open_multipart_uploads(storage["s3"]) and time.monotonic() < deadline:  # the data goes right after the row
        time.sleep(0.2)
    assert open_multipart_uploads(storage["s3"]) == []
    assert session_size(storage["s3"], f"uploads/{upload_id}/data") == 0  # the state object is gone too


def session_size(options: dict[str, Any], path: str) -> int:
    """The size an upload session holds in S3, as a node continuing it would see it (0 before it exists)."""

    async def size() -> int:
        driver = Driver(options)
        try:
            writer = await driver.writer(path, append=True)
            await writer.close()
            return writer.size
        except exceptions.FileNotFoundError:
            return 0
        finally:
            await driver.close()

    return asyncio.run(size())


def open_multipart_uploads(options: dict[str, Any]) -> list[str]:
    async def keys() -> list[str]:
        driver = Driver(options)
        try:
            client = await driver._client()
            listed = await client.list_multipart_uploads(Bucket=driver.settings.bucket)
            return [upload["Key"] for upload in listed.get("Uploads", [])]
        finally:
            await driver.close()

    return asyncio.run(keys())


# --- skopeo ---------------------------------------------------------------------------------------------------
def test_skopeo_push_and_pull_through_redirects(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer, tmp_path: Path
) -> None:
    require("skopeo")
    server = make_registry(storage=s3_storage(moto))
    layout = OciLayout(tmp_path / "layout")
    image = layout.add_image("v1")
    ref = f"docker://{server.host}/s3/skopeo:v1"
    run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", layout.ref("v1"), ref])
    back = OciLayout(tmp_path / "back")
    run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", ref, back.ref("v1")])
    index = json.loads((back.path / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest.digest]
    for blob in (image.manifest, image.config, *image.layers):
        assert back.read_blob(blob.digest) == layout.read_blob(blob.digest)


def test_a_ca_bundle_in_the_environment_does_not_matter_for_plain_http(
    make_registry: Callable[..., RegistryProcess], moto: MotoServer
) -> None:
    """These machines set AWS_CA_BUNDLE; a plain-HTTP endpoint must work whatever it names (here: no file)."""
    server = make_registry(
        storage={**s3_storage(moto), "redirect": {"disable": True}}, env={"AWS_CA_BUNDLE": "/nonexistent/ca.pem"}
    )
    repo, data = unique_repo("s3"), random_bytes(100_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, repo, data)
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
