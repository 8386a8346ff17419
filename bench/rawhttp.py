"""A minimal HTTP/1.1 client whose request bodies go out with `socket.sendfile` from the page cache.

Upload figures must measure the server, not the client: httpx or curl would copy every byte through user space
on the same two cores the server runs on; sendfile costs the client almost nothing and never holds the body.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class HTTPError(RuntimeError):
    pass


def _head(url: str, method: str, headers: dict[str, str] | None, length: int, keep_alive: bool) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {length}"]
    lines += [] if keep_alive else ["Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send(sock: socket.socket, head: bytes, body: bytes, file: BinaryIO | None, offset: int, count: int) -> None:
    try:
        sock.sendall(head + body)
        if file is not None and count:
            sock.sendfile(file, offset, count)
    except (BrokenPipeError, ConnectionResetError):
        pass  # The server answered early (an error); read what it said.


def request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    file: BinaryIO | None = None,
    offset: int = 0,
    count: int = 0,
    timeout: float = 600.0,
) -> Response:
    """One request on its own connection (Connection: close, so the response ends at EOF).

    The body is `body`, or `count` bytes of `file` from `offset` sent with sendfile. A response body is read
    whole: callers only ever get small ones (errors, JSON); a blob download does not go through here.
    """
    parts = urlsplit(url)
    head = _head(url, method, headers, count if file is not None else len(body), keep_alive=False)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        _send(sock, head, body, file, offset, count)
        raw = bytearray()
        while chunk := sock.recv(65536):
            raw += chunk
            if len(raw) > 16 * 1024 * 1024:
                raise HTTPError(f"{method} {url}: response larger than 16 MiB")
    return _parse(bytes(raw), f"{method} {url}")


class Connection:
    """One keep-alive connection, as docker, skopeo and oras push: every request of an upload session reaches
    the same server process. Responses must carry Content-Length or be chunked (both registries do)."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        file: BinaryIO | None = None,
        offset: int = 0,
        count: int = 0,
    ) -> Response:
        _send(
            self.sock,
            _head(url, method, headers, count if file is not None else len(body), True),
            body,
            file,
            offset,
            count,
        )
        raw = bytearray()
        while b"\r\n\r\n" not in raw:
            raw += self._recv(f"{method} {url}")
        end = raw.index(b"\r\n\r\n") + 4
        response = _parse(bytes(raw[:end]), f"{method} {url}")
        rest = raw[end:]
        if response.header("transfer-encoding").lower() == "chunked":
            while not rest.endswith(b"0\r\n\r\n"):
                rest += self._recv(f"{method} {url}")
            response.body = _dechunk(bytes(rest))
        else:
            length = 0 if method == "HEAD" else int(response.header("content-length") or 0)  # a HEAD's is the GET's
            while len(rest) < length:
                rest += self._recv(f"{method} {url}")
            response.body = bytes(rest)
        return response

    def _recv(self, what: str) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HTTPError(f"{what}: connection closed mid-response")
        return chunk


def _parse(raw: bytes, what: str) -> Response:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise HTTPError(f"{what}: no complete response ({len(raw)} bytes)")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise HTTPError(f"{what}: expected {status}, got {response.status}: {response.body[:500]!r}")
    return response


def start_upload(base: str, repo: str, conn: Connection | None = None) -> str:
    url = f"{base}/v2/{repo}/blobs/uploads/"
    r = expect(conn.request(url, "POST") if conn else request(url, "POST"), 202, f"POST upload to {repo}")
    return urljoin(base, r.header("location"))


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def upload_monolithic(base: str, repo: str, path: Path, digest: str) -> None:
    """POST, then one PUT ?digest= carrying the whole file, on one connection."""
    size = path.stat().st_size
    with Connection(base) as conn, path.open("rb") as f:
        location = start_upload(base, repo, conn)
        headers = {"Content-Type": "application/octet-stream"}
        r = conn.request(with_digest(location, digest), "PUT", headers, file=f, count=size)
    expect(r, 201, f"PUT {size} bytes to {repo}")


def upload_chunked(base: str, repo: str, path: Path, digest: str, chunk: int) -> None:
    """POST, PATCH `chunk`-sized pieces with Content-Range, then an empty PUT ?digest=, on one connection."""
    size = path.stat().st_size
    with Connection(base) as conn, path.open("rb") as f:
        location = start_upload(base, repo, conn)
        for start in range(0, size, chunk):
            n = min(chunk, size - start)
            end = start + n - 1
            headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end}"}
            r = conn.request(location, "PATCH", headers, file=f, offset=start, count=n)
            location = urljoin(location, expect(r, 202, f"PATCH {start}-{end} to {repo}").header("location"))
        expect(conn.request(with_digest(location, digest), "PUT"), 201, f"closing PUT of {repo}")


def put_blob(base: str, repo: str, data: bytes, digest: str) -> None:
    """A small blob in one POST+PUT, for seeding test images."""
    location = start_upload(base, repo)
    expect(
        request(with_digest(location, digest), "PUT", {"Content-Type": "application/octet-stream"}, data),
        201,
        f"PUT small blob to {repo}",
    )


def put_manifest(base: str, repo: str, reference: str, data: bytes, media_type: str) -> None:
    r = request(f"{base}/v2/{repo}/manifests/{reference}", "PUT", {"Content-Type": media_type}, data)
    expect(r, 201, f"PUT manifest {repo}:{reference}")


def download(url: str, buffer_size: int = 4 * 1024 * 1024, timeout: float = 600.0) -> int:
    """GET `url` and discard the body as it arrives (`recv_into` one reused buffer, no copies, GIL released);
    returns the body's size, checked against Content-Length."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    buffer = bytearray(buffer_size)
    view = memoryview(buffer)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(head)
        raw = bytearray()
        while b"\r\n\r\n" not in raw:
            n = sock.recv_into(view)
            if not n:
                raise HTTPError(f"GET {url}: connection closed before the response headers")
            raw += view[:n]
            if len(raw) > 65536 and b"\r\n\r\n" not in raw:
                raise HTTPError(f"GET {url}: response headers larger than 64 KiB")
        end = raw.index(b"\r\n\r\n") + 4
        response = _parse(bytes(raw[:end]), f"GET {url}")
        expect(response, 200, f"GET {url}")
        received = len(raw) - end
        while n := sock.recv_into(view):
            received += n
    announced = response.header("content-length")
    if announced and int(announced) != received:
        raise HTTPError(f"GET {url}: received {received} bytes, Content-Length announced {announced}")
    return received


PIPE_SIZE = 1024 * 1024


class SplicedDownloads:
    """Downloads whose bodies never enter user space: socket -> pipe -> /dev/null with `os.splice`.

    A server benchmark must not be capped by its client: on 2 cores, copying every byte out of a loopback socket
    (`recv_into`) costs as much CPU as serving it. Here the kernel moves page references instead, so the client
    costs next to nothing and the figure is the server's. One keep-alive connection: the response headers are
    parsed here, then exactly Content-Length bytes are spliced, so the next response starts where this one ended.
    Linux only (splice, F_SETPIPE_SZ).
    """

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        # Blocking mode with a kernel receive timeout: splice on a socket in Python's timeout (non-blocking) mode
        # would fail with EAGAIN whenever the pipe runs dry.
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(timeout), 0))
        self.pipe_r, self.pipe_w = os.pipe()
        fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.null = os.open(os.devnull, os.O_WRONLY)

    def __enter__(self) -> SplicedDownloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
        for fd in (self.pipe_r, self.pipe_w, self.null):
            os.close(fd)

    def get(self, url: str) -> int:
        """GET `url`, discard the body, return its size: exactly the announced Content-Length, or HTTPError."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        head = self._read_head(f"GET {url}")
        if not head.startswith(b"HTTP/1."):
            raise HTTPError(f"GET {url}: not an HTTP response: {head[:80]!r} (a previous body longer than announced?)")
        response = _parse(head, f"GET {url}")
        expect(response, 200, f"GET {url}")
        announced = response.header("content-length")
        if not announced.isdigit():
            raise HTTPError(f"GET {url}: no Content-Length ({response.headers})")
        length = int(announced)
        received = 0
        while received < length:
            n = os.splice(self.sock.fileno(), self.pipe_w, min(PIPE_SIZE, length - received), flags=os.SPLICE_F_MOVE)
            if not n:
                raise HTTPError(f"GET {url}: connection closed after {received} of {length} bytes")
            received += n
            while n:
                n -= os.splice(self.pipe_r, self.null, n, flags=os.SPLICE_F_MOVE)
        return received

    def _read_head(self, what: str) -> bytes:
        """The status line and headers, and not one byte more: the body is left in the socket for splice."""
        while True:
            peeked = self.sock.recv(65536, socket.MSG_PEEK)
            if not peeked:
                raise HTTPError(f"{what}: connection closed before the response headers")
            end = peeked.find(b"\r\n\r\n")
            if end >= 0:
                return self.sock.recv(end + 4, socket.MSG_WAITALL)
            if len(peeked) >= 65536:
                raise HTTPError(f"{what}: response headers larger than 64 KiB")
            # MSG_PEEK alone returns at once with what is queued: block until more than that has arrived.
            if len(self.sock.recv(len(peeked) + 1, socket.MSG_PEEK | socket.MSG_WAITALL)) <= len(peeked):
                raise HTTPError(f"{what}: connection closed in the response headers")


def spliced_download(url: str, timeout: float = 600.0) -> int:
    """One GET on its own connection through `SplicedDownloads`; returns the body's size."""
    with SplicedDownloads(url, timeout) as client:
        return client.get(url)
