"""`Expect: 100-continue`: a client that holds its body back until invited learns first of what would refuse it."""

from __future__ import annotations

import socket
import uuid

import httpx

from registry_api import sha256, start_upload, unique_repo, xfail_on_distribution
from registry_process import RegistryProcess

BODY = b"held back until the registry says go" * 100


def _head_then_body(registry: RegistryProcess, method: str, path: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """Send the request head with `Expect: 100-continue`, read the first answer, then (only if it is the interim
    `100 Continue`) send the body and read the final answer."""
    address, port = registry.host.rsplit(":", 1)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {registry.host}", "Expect: 100-continue", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in {"Content-Length": str(len(BODY)), **headers}.items()]
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        first = sock.recv(65536)
        if not first.startswith(b"HTTP/1.1 100"):
            return first, b""
        sock.sendall(BODY)
        final = b""
        while chunk := sock.recv(65536):
            final += chunk
    return first, final


@xfail_on_distribution("refuses it before the body too, but as BLOB_UPLOAD_INVALID (it parses its own session ids)")
def test_a_chunk_for_an_unknown_session_is_refused_before_its_body(registry: RegistryProcess) -> None:
    path = f"/v2/{unique_repo()}/blobs/uploads/{uuid.uuid4()}"
    first, _ = _head_then_body(registry, "PATCH", path, {"Content-Range": f"0-{len(BODY) - 1}"})
    assert first.startswith(b"HTTP/1.1 404"), first[:200]
    assert b"BLOB_UPLOAD_UNKNOWN" in first


@xfail_on_distribution("refuses it before the body too, but as a plain-text 404 from its router")
def test_a_bad_name_is_refused_before_the_body(registry: RegistryProcess) -> None:
    first, _ = _head_then_body(registry, "PUT", "/v2/Bad..Name/manifests/latest", {})
    assert first.startswith(b"HTTP/1.1 400"), first[:200]
    assert b"NAME_INVALID" in first


def test_a_known_session_invites_the_body(registry: RegistryProcess, client: httpx.Client) -> None:
    repo = unique_repo()
    location = httpx.URL(start_upload(client, repo)).copy_merge_params({"digest": sha256(BODY)})
    first, final = _head_then_body(registry, "PUT", location.raw_path.decode(), {})
    assert first.startswith(b"HTTP/1.1 100"), first[:200]
    assert final.startswith(b"HTTP/1.1 201"), final[:300]
    assert client.get(f"/v2/{repo}/blobs/{sha256(BODY)}").content == BODY


def test_a_monolithic_upload_with_a_malformed_digest_is_refused_before_its_body(registry: RegistryProcess) -> None:
    first, _ = _head_then_body(registry, "POST", f"/v2/{unique_repo()}/blobs/uploads/?digest=sha256:nothex", {})
    assert first.startswith(b"HTTP/1.1 400"), first[:200]
    assert b"DIGEST_INVALID" in first
