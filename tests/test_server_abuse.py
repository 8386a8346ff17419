"""Hostile and broken clients against a real registry process: silent sockets by the thousand, slowloris headers,
HTTP/0.9 lines, connection floods beyond the cap, trickling bodies. The registry must keep answering everyone else
and free what such clients hold."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from registry_api import raw_request
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="limits and timeouts of docker-registry 3")

SILENT = 1500
"""Silent connections opened in one test, within the test process's own descriptor limit."""


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, SILENT + 1024)), hard))
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(server: RegistryProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # no TIME_WAIT pile-up
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset), without waiting for it."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def answer_time(server: RegistryProcess) -> float:
    """Seconds a new connection takes to get `/v2/` answered."""
    started = time.monotonic()
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        assert client.get(f"{server.url}/v2/").status_code == 200
    return time.monotonic() - started


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_silent_slowloris_and_http09_connections_are_closed_while_others_are_served(
    make_registry: Callable[..., RegistryProcess], sockets: list[socket.socket]
) -> None:
    server = make_registry(extra_config={"http": {"timeout": {"header": "2s"}}})
    silent = [connect(server) for _ in range(SILENT)]
    sockets += silent
    trickling = [connect(server) for _ in range(20)]
    sockets += trickling
    http09 = [connect(server) for _ in range(5)]
    sockets += http09
    for sock in http09:
        sock.sendall(b"GET /v2/\r\n")
    head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 4:  # one header byte per connection every 0.2 s: slowloris
        for sock in trickling:
            with contextlib.suppress(OSError):
                sock.sendall(head[sent : sent + 1])
        sent += 1
        assert answer_time(server) < 1.0, "a normal request waited behind the idle connections"
        time.sleep(0.2)
    wait_until(lambda: all(closed_by_server(s) for s in silent + trickling + http09), 10, "the server to close them")
    assert answer_time(server) < 1.0


def test_connections_beyond_the_cap_are_closed_at_once(
    make_registry: Callable[..., RegistryProcess], sockets: list[socket.socket]
) -> None:
    server = make_registry(workers=1, extra_config={"http": {"maxconnections": 50, "timeout": {"header": "3s"}}})
    held = [connect(server) for _ in range(50)]
    sockets += held
    time.sleep(0.5)
    extra = [connect(server) for _ in range(20)]
    sockets += extra
    wait_until(lambda: all(closed_by_server(s) for s in extra), 2, "connections beyond the cap to be closed")
    assert not any(closed_by_server(s) for s in held), "the connections within the cap are kept until their timeout"
    wait_until(lambda: all(closed_by_server(s) for s in held), 10, "the held connections to time out")
    assert answer_time(server) < 1.0
    assert "50 connections open, the most this worker takes: refused" in server.log_path.read_text()


def test_a_trickling_upload_body_is_ended_and_its_session_stays_usable(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A body below the minimum pace is ended with a 408; what did arrive stays in the session (it was dropped when
    less than a buffer had come: a slow `skopeo copy` streaming a small layer from a slow source lost all of it)."""
    server = make_registry(extra_config={"http": {"timeout": {"minrate": 1000, "ratewindow": "1s"}}})
    data = b"x" * 5000
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post("/v2/slow/blobs/uploads/").headers["Location"]
        path = httpx.URL(location).raw_path.decode()
        sock = connect(server)
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\nContent-Range: 0-{len(data) - 1}\r\n\r\n"
        )
        sock.sendall(head.encode())
        started = time.monotonic()
        answer = b""
        sent = 0
        sock.settimeout(0.25)
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 10:
            with contextlib.suppress(OSError):
                sock.sendall(b"x" * 10)  # 40 bytes a second, far below the 1000 asked
                sent += 10
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65536)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"BLOB_UPLOAD_INVALID" in answer
        assert time.monotonic() - started < 5
        # the claim was released, and what arrived was kept: the client resumes from there
        status = client.get(location)
        assert status.status_code == 204
        stored = int(status.headers["Range"].split("-")[1]) + 1 if status.headers["Range"] != "0-0" else 0
        assert 0 < stored <= sent
        rest = data[stored:]
        finished = client.put(
            location,
            params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()},
            content=rest,
            headers={"Content-Range": f"{stored}-{len(data) - 1}"} if rest else {},
        )
        assert finished.status_code == 201, finished.text
        assert client.get(f"/v2/slow/blobs/sha256:{hashlib.sha256(data).hexdigest()}").content == data


def test_fast_bodies_are_not_paced(make_registry: Callable[..., RegistryProcess]) -> None:
    """The pace check costs nothing a normal client notices: a 64 MiB body at full speed passes."""
    server = make_registry(extra_config={"http": {"timeout": {"minrate": 1000, "ratewindow": "1s"}}})
    data = b"\0" * (64 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/v2/fast/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201


def test_out_of_descriptors_on_accept_is_one_line_a_minute_and_passes(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """A worker whose descriptor limit is lower than its connection cap: accepts fail with EMFILE. It pauses and
    retries (no spinning), says so once, and serves again as soon as connections close."""
    port = free_port()
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"http": {"addr": f"127.0.0.1:{port}", "workers": 1, "maxconnections": 5000}})
    )
    log_path = tmp_path / "registry.log"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docker_registry.server", "serve", "config.yml"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=low_limit,
            env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
        )
    server = RegistryProcess(tmp_path, port=port)
    try:
        wait_until(lambda: "worker 0 ready" in log_path.read_text() or "listening" in log_path.read_text(), 90, "start")
        time.sleep(0.5)
        held = []
        for _ in range(300):
            with contextlib.suppress(OSError):
                held.append(connect(server))
        sockets += held
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(3)
        assert _cpu_seconds(proc.pid) - cpu_before < 1.0, "the worker spun on accept errors"
        for sock in held:
            sock.close()
        sockets.clear()
        wait_until(lambda: _answers(server), 10, "the registry to answer again")
        text = log_path.read_text()
        assert text.count("cannot accept connections") == 1, text[-3000:]
        assert "Traceback" not in text
    finally:
        proc.terminate()
        proc.wait(30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answers(server: RegistryProcess) -> bool:
    try:
        return answer_time(server) < 1.0
    except httpx.TransportError:
        return False


def test_a_request_the_parser_refuses_gets_a_fixed_answer_that_echoes_nothing(registry: RegistryProcess) -> None:
    for head in (
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 12<script>alert(1)</script>\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"<b>" * 20000 + b"\r\n\r\n",
    ):
        answer = raw_request(registry.host, head)
        status_line, _, rest = answer.partition(b"\r\n")
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), answer[:300]
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert b"<script>" not in answer
        assert b"<b>" not in answer
        assert body.strip() in (b"400 Bad Request", b"431 Error", b"413 Error"), body[:300]
        assert b"server: docker-registry" in headers.lower()
        assert b"aiohttp" not in headers.lower()
