"""Upstreams for the pull-through cache's tests: real registries on loopback (CNCF Distribution 2.8, anonymous or
with htpasswd; ours with the built-in token service), a fake one that cuts a blob short, and what the caches'
tests need to count and check what went upstream."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from test_auth_htpasswd import write_htpasswd
from token_minting import pem_private

from oci_content import OCI_MANIFEST
from registry_process import RegistryProcess

USER, PASSWORD = "mirror", "mirror-secret-7"
PULL_LIMIT = "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading"
"""Docker Hub's words in its 429s."""


def distribution(workdir: Path, htpasswd: bool = False) -> RegistryProcess:
    """CNCF Distribution 2.8 on loopback, anonymous or with htpasswd; its log counts the requests it served."""
    extra: dict[str, Any] = {"log": {"level": "info"}}
    workdir.mkdir(parents=True, exist_ok=True)
    if htpasswd:
        path = write_htpasswd(workdir / "htpasswd", {USER: PASSWORD})
        extra["auth"] = {"htpasswd": {"realm": "upstream", "path": str(path)}}
    return RegistryProcess(workdir, kind="distribution", extra_config=extra).start()


def token_registry(workdir: Path) -> RegistryProcess:
    """Our registry with the built-in token service: the upstream of Docker's token flow (no anonymous pulls)."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "service.key"
    key.write_bytes(pem_private(ec.generate_private_key(ec.SECP256R1())))
    users = write_htpasswd(workdir / "htpasswd", {USER: PASSWORD})
    token = {"service": "upstream", "issuer": "upstream-issuer", "issue": {"key": str(key), "htpasswd": str(users)}}
    return RegistryProcess(workdir / "registry", kind="ours", extra_config={"auth": {"token": token}}).start()


def client_for(upstream: RegistryProcess, auth: tuple[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=upstream.url, timeout=60, auth=auth)


def token_client(upstream: RegistryProcess, scope: str) -> httpx.Client:
    """A client of the token registry holding a token for `scope` (push and pull)."""
    answer = httpx.get(
        f"{upstream.url}/auth/token", params={"service": "upstream", "scope": scope}, auth=(USER, PASSWORD)
    )
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['token']}"}
    return httpx.Client(base_url=upstream.url, timeout=60, headers=headers)


def _served(upstream: RegistryProcess, method: str, uri: str) -> int:
    """How many requests Distribution served whose method is `method` and URI matches the pattern `uri` (its log
    has one line per request; logfmt quotes the URI only when it holds characters such as `:`)."""
    pattern = re.compile(rf'http\.request\.method={method} .*http\.request\.uri="?{uri}(?:"|\s)')
    return sum(
        1
        for line in upstream.log_path.read_text().splitlines()
        if pattern.search(line) and "response completed" in line
    )


def upstream_requests(upstream: RegistryProcess, method: str, path: str) -> int:
    """How many requests `method /v2/<path>` Distribution served."""
    return _served(upstream, method, f"/v2/{re.escape(path)}")


def blob_gets(upstream: RegistryProcess, digest: str) -> int:
    """How many GETs of the blob, from any repository, Distribution served."""
    return _served(upstream, "GET", f'/v2/[^" ]*/blobs/{re.escape(digest)}')


def mirror(workdir: Path, upstream_url: str, **extra: Any) -> RegistryProcess:
    return RegistryProcess(workdir, kind="ours", extra_config={"proxy": {"remoteurl": upstream_url, **extra}}).start()


@contextmanager
def raw_server(answer: Callable[[socket.socket, str], None]) -> Iterator[str]:
    """A fake HTTP server on loopback: `answer(conn, head)` writes the answer to each request (a connection each,
    in a thread each; `head` is the request line and headers). Yields its URL."""
    server = socket.create_server(("127.0.0.1", 0))

    def read_head(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            answer(conn, head.split(b"\r\n\r\n", 1)[0].decode(errors="replace"))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=read_head, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@contextmanager
def cutting_upstream(
    blob: bytes,
    cut_at: int,
    pieces: int = 1,
    pause: float = 0.0,
    release: threading.Event | None = None,
    manifest: Callable[[], bytes] = lambda: b"{}",
    tags: tuple[str, ...] = (),
    chunked: bool = False,
    only: str | None = None,
) -> Iterator[tuple[str, list[int]]]:
    """A fake upstream that announces `blob` whole but closes the connection after `cut_at` bytes of it, for the
    first request only; later requests get it whole, in `pieces` with `pause` seconds between them (and, given
    `release`, the pieces after the first only once it is set). Yields its URL and the number of blob GETs it saw.
    Whatever digest is asked for, `blob` is what it sends: given another one's, it is an upstream that lies; and
    whatever manifest is asked for (by tag or digest, with no `Docker-Content-Digest`), what `manifest()` gives, and
    `tags` as any repository's tag list; both, too, in `pieces` with `pause` seconds between them. `chunked` sends
    blobs with no length announced (chunked transfer encoding; its pieces are the chunks), as some upstreams do.
    Given `only`, a repository name, the blob is there alone: elsewhere it is a 404."""
    gets = [0]

    def answer(conn: socket.socket, head: str) -> None:
        line = head.split("\r\n", 1)[0]
        if "/blobs/" not in line:
            body = manifest() if "/manifests/" in line else b"{}"
            if "/tags/list" in line:
                body = json.dumps({"name": line.split()[1].split("/")[2], "tags": list(tags)}).encode()
            kind = OCI_MANIFEST if "/manifests/" in line else "application/json"
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\n{_length(len(body))}".encode())
            if line.startswith("HEAD"):
                return
            step = -(-len(body) // pieces) if "/manifests/" in line or "/tags/" in line else len(body) or 1
            for start in range(0, len(body), step):
                if start:
                    time.sleep(pause)
                conn.sendall(body[start : start + step])
            return
        if only is not None and f"/v2/{only}/blobs/" not in line:
            conn.sendall(f"HTTP/1.1 404 Not Found\r\n{_length(0)}".encode())
            return
        if line.startswith("HEAD"):  # the cache asking whether the upstream has it (in another repository)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{_length(len(blob))}".encode())
            return
        gets[0] += 1
        head = "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" if chunked else _length(len(blob))
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{head}".encode())
        if gets[0] > 1 or cut_at >= len(blob):
            size = -(-len(blob) // pieces)
            for start in range(0, len(blob), size):
                if start and release is not None:
                    release.wait(60)
                piece = blob[start : start + size]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                time.sleep(pause)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
            return
        conn.sendall(blob[:cut_at])
        time.sleep(1.0)  # the cache's clients are streaming these bytes when the connection dies

    with raw_server(answer) as url:
        yield url, gets


@contextmanager
def limiting_upstream(manifest: bytes, blob: bytes, limited: dict[str, str | None]) -> Iterator[tuple[str, list[str]]]:
    """A fake upstream serving `manifest` (by any tag or digest, with no `Docker-Content-Digest`) and `blob` (by any
    digest) that answers 429 to the methods `limited` holds as keys, each with its `Retry-After` (None: no header)
    and, for a GET, a JSON error body in Docker Hub's words: as Docker Hub, which limits manifest GETs but not HEADs.
    `limited` may change while it runs. Yields its URL and the request lines it saw."""
    seen: list[str] = []

    def answer(conn: socket.socket, head: str) -> None:
        line = head.split("\r\n", 1)[0]
        seen.append(line)
        method = line.split(" ", 1)[0]
        if method in limited:
            retry = limited[method]
            body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": PULL_LIMIT}]}).encode()
            headers = f"Retry-After: {retry}\r\n" if retry is not None else ""
            conn.sendall(f"HTTP/1.1 429 Too Many Requests\r\n{headers}Content-Type: application/json\r\n".encode())
            conn.sendall(_length(len(body)).encode() + (body if method == "GET" else b""))
            return
        body, kind = (blob, "application/octet-stream") if "/blobs/" in line else (manifest, OCI_MANIFEST)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\n{_length(len(body))}".encode())
        if method == "GET":
            conn.sendall(body)

    with raw_server(answer) as url:
        yield url, seen


def _length(size: int) -> str:
    """The end of an answer's head: its length, and a connection closed after it."""
    return f"Content-Length: {size}\r\nConnection: close\r\n\r\n"


@contextmanager
def redirecting_upstream(blob: bytes) -> Iterator[tuple[str, list[tuple[str, str, bool]]]]:
    """A fake upstream asking for basic credentials and redirecting every blob GET (307) to a storage server of
    another origin with a signed URL, as Docker Hub and registries on S3 do; the storage refuses a request that
    carries credentials (a signed URL allows one authentication only) and sends `blob`. Yields the upstream's URL
    and what each server saw: (server, request line, whether it carried an `Authorization`)."""
    seen: list[tuple[str, str, bool]] = []

    def storage(conn: socket.socket, head: str) -> None:
        credentials = "\r\nauthorization:" in head.lower()
        seen.append(("storage", head.split("\r\n", 1)[0], credentials))
        if credentials:
            conn.sendall(f"HTTP/1.1 400 Bad Request\r\n{_length(0)}".encode())
        else:
            conn.sendall(f"HTTP/1.1 200 OK\r\n{_length(len(blob))}".encode() + blob)

    with raw_server(storage) as storage_url:

        def upstream(conn: socket.socket, head: str) -> None:
            line, credentials = head.split("\r\n", 1)[0], "\r\nauthorization: basic " in head.lower()
            seen.append(("upstream", line, credentials))
            if not credentials:
                challenge = 'WWW-Authenticate: Basic realm="upstream"'
                conn.sendall(f"HTTP/1.1 401 Unauthorized\r\n{challenge}\r\n{_length(0)}".encode())
            elif "/blobs/" in line and line.startswith("GET"):
                location = f"Location: {storage_url}/signed/blob?signature=abc"
                conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\n{location}\r\n{_length(0)}".encode())
            elif "/blobs/" in line:
                conn.sendall(f"HTTP/1.1 200 OK\r\n{_length(len(blob))}".encode())
            else:
                conn.sendall(f"HTTP/1.1 200 OK\r\n{_length(2)}{{}}".encode())

        with raw_server(upstream) as upstream_url:
            yield upstream_url, seen
