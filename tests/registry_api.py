"""Client-side helpers for the black-box API tests: test data, pushes over plain HTTP, error assertions.

Everything here talks to a registry the way a client does (httpx, raw sockets); nothing imports the server.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from oci_content import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP
from oci_content import DOCKER_LIST as DOCKER_LIST  # re-exported: the API tests take all their helpers from here
from oci_content import MANIFEST_ACCEPT as MANIFEST_ACCEPT
from oci_content import OCI_EMPTY as OCI_EMPTY
from oci_content import OCI_MANIFEST as OCI_MANIFEST
from oci_content import sha256 as sha256
from oci_content import sha512 as sha512
from registry_process import implementation


def on_distribution() -> bool:
    return implementation() == "distribution"


def xfail_on_distribution(reason: str) -> pytest.MarkDecorator:
    """Mark a spec-following test as expected to fail only on CNCF Distribution 2.8 (the reference run)."""
    return pytest.mark.xfail(on_distribution(), reason=f"CNCF Distribution 2.8: {reason}", strict=False)


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def unique_repo(prefix: str = "api") -> str:
    """A repository name no other test uses, so tests can share the session registry."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def error_codes(response: httpx.Response) -> list[str]:
    """The `code`s of a spec error body; asserts the body has the spec's JSON shape."""
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: not a JSON error body: "
            f"{response.content[:300]!r}"
        ) from None
    assert isinstance(body, dict), body
    assert isinstance(body.get("errors"), list), body
    assert body["errors"], body
    for error in body["errors"]:
        assert isinstance(error, dict), body
        assert isinstance(error.get("code"), str), body
        assert error["code"].replace("_", "").isalpha(), body
        assert error["code"].isupper(), body
        if "message" in error:
            assert isinstance(error["message"], str), body
    return [error["code"] for error in body["errors"]]


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *codes: str) -> None:
    """The response has one of the statuses and its error body carries one of the codes."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (
        f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:500]}"
    )
    found = error_codes(response)
    assert set(found) & set(codes), f"expected one of {codes}, got {found}"


def push_blob(client: httpx.Client, repo: str, data: bytes, digest: str | None = None) -> str:
    """Monolithic push (POST then PUT with the whole body): the most portable way, as skopeo does it."""
    digest = digest or sha256(data)
    location = start_upload(client, repo)
    response = client.put(
        with_params(location, digest=digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, (response.status_code, response.text)
    return digest


def with_params(location: str, **params: str) -> httpx.URL:
    """Add query parameters to an upload `Location`, keeping the registry's own (httpx's `params=` drops them)."""
    return httpx.URL(location).copy_merge_params(params)


def start_upload(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, (response.status_code, response.text)
    assert response.headers.get("Location"), response.headers
    return response.headers["Location"]


def put_manifest(client: httpx.Client, repo: str, reference: str, body: bytes, media_type: str) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type})


def get_manifest(client: httpx.Client, repo: str, reference: str, method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})


def canonical(document: dict[str, Any]) -> bytes:
    """Manifest bytes as a client would send them; the registry must keep them byte for byte."""
    return json.dumps(document, indent=3).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass
class Pushed:
    """A manifest pushed by a test: what the registry must give back."""

    body: bytes
    media_type: str
    digest: str
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    def as_descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.body), **extra}


def image_manifest(
    client: httpx.Client,
    repo: str,
    *,
    media_type: str = OCI_MANIFEST,
    layers: int = 1,
    config: bytes | None = None,
    config_media_type: str | None = None,
    artifact_type: str | None = None,
    subject: Pushed | None = None,
    annotations: dict[str, str] | None = None,
    push_blobs: bool = True,
) -> Pushed:
    """Build an image (or artifact) manifest whose blobs are pushed to `repo` first (unless told not to)."""
    docker = media_type == DOCKER_MANIFEST
    if config is None:
        config = canonical({"architecture": "amd64", "os": "linux", "unique": uuid.uuid4().hex})
    config_type = config_media_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    layer_blobs = [random_bytes(1024 + i) for i in range(layers)]
    if push_blobs:
        for blob in [config, *layer_blobs]:
            push_blob(client, repo, blob)
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER_GZIP, blob) for blob in layer_blobs],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject:
        document["subject"] = subject.as_descriptor()
    if annotations:
        document["annotations"] = annotations
    body = canonical(document)
    return Pushed(body, media_type, sha256(body), artifact_type, annotations)


def index_manifest(children: list[Pushed], media_type: str = OCI_INDEX) -> Pushed:
    platforms = [{"architecture": arch, "os": "linux"} for arch in ("amd64", "arm64", "s390x", "ppc64le")]
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [child.as_descriptor(platform=platforms[i % len(platforms)]) for i, child in enumerate(children)],
    }
    body = canonical(document)
    return Pushed(body, media_type, sha256(body))


def push(client: httpx.Client, repo: str, manifest: Pushed, reference: str | None = None) -> httpx.Response:
    """PUT a built manifest (by tag or, by default, by digest) and insist on success."""
    response = put_manifest(client, repo, reference or manifest.digest, manifest.body, manifest.media_type)
    assert response.status_code == 201, (response.status_code, response.text)
    return response


def raw_request(host: str, request: bytes, timeout: float = 10.0, *, first_answer: bool = False) -> bytes:
    """Send bytes as-is (no client-side path normalisation or header checks) and read the whole answer: until the
    server closes, or with `first_answer` once a whole response with a `Content-Length` has come (a server may keep
    reading, up to its lingering time, the body of a request it refused before the body was sent)."""
    address, port = host.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if first_answer and _answered(b"".join(chunks)):
                break
    return b"".join(chunks)


def _answered(data: bytes) -> bool:
    """Whether `data` begins with one whole response: its headers, then as much body as its `Content-Length` says."""
    head, separator, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", head)
    return bool(separator) and length is not None and len(body) >= int(length[1])


def raw_http(
    host: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    first_answer: bool = False,
) -> bytes:
    """One HTTP/1.1 request with the path exactly as given (`..`, `%00`, spaces) on its own connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    all_headers = {"Content-Length": str(len(body)), **(headers or {})}
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return raw_request(host, ("\r\n".join(lines) + "\r\n\r\n").encode() + body, first_answer=first_answer)


def raw_status(answer: bytes) -> int:
    """The status code of a raw HTTP answer."""
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/"), answer[:200]
    return int(status_line.split()[1])


def byteranges(answer: httpx.Response) -> list[tuple[str, bytes]]:
    """The parts of a `multipart/byteranges` answer: each one's `Content-Range` and bytes."""
    assert answer.status_code == 206, answer.text
    assert answer.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    head = f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + answer.content)
    parts = []
    for part in message.iter_parts():
        assert part.get_content_type() == "application/octet-stream"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((str(part["Content-Range"]), payload))
    return parts
