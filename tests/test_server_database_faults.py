"""The metadata database under faults, with a real registry process: a lock held elsewhere for a long time, and a
database that turns read-only and then writable again."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from registry_api import image_manifest, push, unique_repo
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="database behaviour of docker-registry 3")


def _blob(i: int) -> tuple[bytes, str]:
    data = f"blob {i} {time.monotonic()}".encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


@contextmanager
def exclusive_lock(database: Path) -> Iterator[None]:
    """Another process's write transaction on the registry's SQLite database (a backup, a stuck tool)."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=10)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_reads_stay_fast_and_writes_fail_fast_while_another_process_holds_the_write_lock(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    server = make_registry(extra_config={"database": {"locktimeout": "3s"}})
    repo = unique_repo("locked")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = image_manifest(client, repo)
        assert push(client, repo, image, "v1").status_code == 201

        def timed(method: str, path: str, **kwargs: object) -> tuple[int, float, httpx.Headers]:
            started = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=30) as own:
                response = own.request(method, path, **kwargs)  # type: ignore[arg-type]
            return response.status_code, time.monotonic() - started, response.headers

        with exclusive_lock(server.data_dir / "registry.db"), ThreadPoolExecutor(24) as pool:
            pushes = [
                pool.submit(timed, "POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
                for data, digest in map(_blob, range(16))
            ]
            time.sleep(0.3)  # the pushes now occupy every writer thread, waiting for the lock
            reads = [
                pool.submit(timed, "GET", path)
                for _ in range(4)
                for path in (f"/v2/{repo}/tags/list", "/v2/_catalog", f"/v2/{repo}/manifests/v1", "/v2/x/tags/list")
            ]
            for future in reads:
                status, took, _ = future.result()
                assert status in (200, 404)
                assert took < 2.5, took  # under the lock timeout: a read that waited for the lock would show
            for future in pushes:
                status, took, headers = future.result()
                assert status == 503
                assert "Retry-After" in headers
                assert took < 12, took  # a few lock timeouts at most: its own wait, and the batches queued ahead of it
        data, digest = _blob(99)
        assert client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201


def _set_immutable(path: Path, on: bool) -> None:
    """`chattr +i`: not even root may open the file for writing; what opens it then gets it read-only."""
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


@pytest.fixture
def can_make_immutable(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("")
    try:
        _set_immutable(probe, True)
        _set_immutable(probe, False)
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root on ext4: chattr +i must work ({exc})")
        pytest.skip("needs root and a file system with the immutable attribute (chattr from e2fsprogs)")


@pytest.mark.usefixtures("can_make_immutable")
def test_writes_work_again_once_a_read_only_database_is_writable(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry()
    database = server.data_dir / "registry.db"
    repo = unique_repo("readonly")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post(f"/v2/{repo}/blobs/uploads/").status_code == 202
        assert server.proc is not None
        _set_immutable(database, True)
        try:
            # workers started now open the database read-only (SQLite falls back to it) and, unhelped, stay so
            workers = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
            for pid in workers.stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            time.sleep(1.5)
            for _ in range(6):
                response = client.post(f"/v2/{repo}/blobs/uploads/")
                assert response.status_code == 503, response.text
        finally:
            _set_immutable(database, False)
        deadline = time.monotonic() + 10
        answers: list[int] = []
        while time.monotonic() < deadline:
            answers = [client.post(f"/v2/{repo}/blobs/uploads/").status_code for _ in range(6)]
            if answers == [202] * 6:
                break
            time.sleep(0.5)
        assert answers == [202] * 6, answers


def test_a_closing_put_that_the_database_refuses_leaves_the_session_free_and_whole(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A PUT whose last chunk is stored but whose blob cannot be recorded (another process holds the database's
    write lock past the lock timeout) answers 503; the session then holds its last chunk and is free, so the
    client's retry (a PUT without a body, as Retry-After asks) finishes it. Before, the failed PUT kept its claim:
    every retry was refused as "another request is writing" for the claim's 60 s lease, with the session's size
    still the one before the last chunk."""
    server = make_registry(extra_config={"database": {"locktimeout": "1s"}})
    repo = unique_repo("refused")
    data = os.urandom(3 * 1024 * 1024)
    first, last = data[: 1024 * 1024], data[1024 * 1024 :]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        headers = {"Content-Range": f"0-{len(first) - 1}", "Content-Type": "application/octet-stream"}
        assert client.patch(location, content=first, headers=headers).status_code == 202
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = (
                f"PUT {location}?digest={digest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(last)}\r\n"
                f"Content-Range: {len(first)}-{len(data) - 1}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            sock.sendall(head.encode() + last[:-1000])
            time.sleep(0.5)  # the PUT has claimed the session and is writing its chunk
            with exclusive_lock(server.data_dir / "registry.db"):
                sock.sendall(last[-1000:])
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
        deadline = time.monotonic() + 10
        while client.get(location).headers.get("Range") != f"0-{len(data) - 1}":
            assert time.monotonic() < deadline, client.get(location).headers
            time.sleep(0.2)
        finished = client.put(location, params={"digest": digest})
        assert finished.status_code == 201, finished.text
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_writes_are_refused_not_hung_while_a_stopped_process_holds_the_write_gate(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """The registry's writers queue on a flock beside the database (`writegate`), which a process keeps while it is
    stopped (SIGSTOP, a `garbage-collect` suspended with Ctrl-Z): every write of every worker hung, with no
    answer, for as long as it stayed stopped. Now they answer 503 after twice the lock timeout; reads go on, and
    readiness says which check fails (it answered 200 throughout) until the gate is free again."""
    config = {"database": {"locktimeout": "1s"}, "health": {"database": {"interval": "0.5s"}}}
    server = make_registry(extra_config=config)
    repo = unique_repo("gated")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = image_manifest(client, repo)
        assert push(client, repo, image, "v1").status_code == 201
        gate = os.open(server.data_dir / "registry.db.writelock", os.O_RDWR)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)  # as the stopped process holds it
            data, digest = _blob(1)
            started = time.monotonic()
            refused = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data, timeout=8)
            assert refused.status_code == 503, refused.text
            assert "Retry-After" in refused.headers
            assert time.monotonic() - started < 6
            assert client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": image.media_type}).status_code == 200
            not_ready = _readiness(client, 503)
            assert not_ready.json()["failing"] == ["database"]
        finally:
            os.close(gate)
        data, digest = _blob(2)
        assert client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
        _readiness(client, 200)


def _readiness(client: httpx.Client, status: int) -> httpx.Response:
    """`/readyz` once it answers `status` (each worker runs its checks on its own: every answer must agree)."""
    deadline = time.monotonic() + 10
    while True:
        answers = [client.get("/readyz") for _ in range(4)]
        if all(answer.status_code == status for answer in answers):
            return answers[-1]
        assert time.monotonic() < deadline, [(answer.status_code, answer.text) for answer in answers]
        time.sleep(0.2)
