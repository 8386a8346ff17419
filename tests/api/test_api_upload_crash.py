"""Upload sessions after a server crash mid-chunk, and DELETE racing a request that writes to the session."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from docker_registry.server.registry.upload_area import upload_path
from registry_api import error_codes, on_distribution, random_bytes, sha256, start_upload, unique_repo, with_params
from registry_process import RegistryProcess
from s3_server import on_filesystem_only

pytestmark = [
    pytest.mark.skipif(on_distribution(), reason="kills and inspects our own server's processes and files"),
    on_filesystem_only("inspects the upload's file"),
]

OCTETS = "Content-Type: application/octet-stream\r\n"


def _open_patch(server: RegistryProcess, location: str, start: int, length: int) -> socket.socket:
    """A PATCH whose headers announce `length` bytes from `start`; the caller sends the body piece by piece."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    path = httpx.URL(location).raw_path.decode()
    sock.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: {server.host}\r\n{OCTETS}"
        f"Content-Range: {start}-{start + length - 1}\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    return sock


def _stored_bytes(server: RegistryProcess, location: str) -> int:
    data = server.data_dir / upload_path(location.rstrip("/").rsplit("/", 1)[1].split("?")[0])
    return data.stat().st_size if data.exists() else 0


def _wait_for_storage(server: RegistryProcess, location: str, at_least: int) -> int:
    deadline = time.monotonic() + 20
    while (stored := _stored_bytes(server, location)) < at_least:
        assert time.monotonic() < deadline, f"only {stored} bytes reached storage"
        time.sleep(0.02)
    return stored


def _recorded_size(status: httpx.Response) -> int:
    match = re.fullmatch(r"0-(\d+)", status.headers["Range"])
    assert match, status.headers["Range"]
    return int(match.group(1)) + 1


def _no_server_errors(server: RegistryProcess) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert " 500 " not in log, log[-3000:]


def test_upload_resumes_at_once_after_the_server_is_killed_mid_patch(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    server = make_registry()
    repo, data = unique_repo("crash"), random_bytes(6 * 1024 * 1024)
    first = 1024 * 1024
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, repo)
        done = client.patch(location, content=data[:first], headers={"Content-Range": f"0-{first - 1}"})
        assert done.status_code == 202, done.text
        location = done.headers["Location"]

    sock = _open_patch(server, location, first, len(data) - first)
    sock.sendall(data[first : 3 * first + 12345])  # the rest of the body never comes: the server dies first
    _wait_for_storage(server, location, 2 * first)
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)  # the master and every worker, as a node crash would
    server.proc.wait()
    sock.close()
    stored = _stored_bytes(server, location)
    assert first < stored <= 3 * first + 12345

    server.start()
    began = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        offset = _recorded_size(status)
        assert offset == stored, "the status tells where the bytes in storage end"
        rest = client.patch(location, content=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
        assert rest.status_code == 202, rest.text
        assert rest.headers["Range"] == f"0-{len(data) - 1}"
        put = client.put(with_params(rest.headers["Location"], digest=sha256(data)))
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == sha256(data)
        assert time.monotonic() - began < 5, "resuming must not wait for a lease"
        blob = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
        assert blob.status_code == 200
        assert blob.content == data
    _no_server_errors(server)


def test_put_resumes_after_the_server_is_killed_mid_patch(make_registry: Callable[..., RegistryProcess]) -> None:
    """The finishing PUT alone (no status asked first) takes the dead writer's claim over too."""
    server = make_registry(workers=1)
    repo, data = unique_repo("crash-put"), random_bytes(3 * 1024 * 1024)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, repo)
    sock = _open_patch(server, location, 0, len(data))
    sock.sendall(data[: 2 * 1024 * 1024])
    stored = _wait_for_storage(server, location, 1024 * 1024)
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    sock.close()
    stored = _stored_bytes(server, location)

    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        put = client.put(
            with_params(location, digest=sha256(data)),
            content=data[stored:],
            headers={"Content-Range": f"{stored}-{len(data) - 1}"},
        )
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == sha256(data)
        assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
        finished = client.get(location)
        assert finished.status_code == 404
        assert error_codes(finished) == ["BLOB_UPLOAD_UNKNOWN"], "a finished session is gone"
    _no_server_errors(server)


def _claim_holder(server: RegistryProcess, location: str) -> int:
    """The pid of the worker whose claim the session carries (`<boot>/<pid namespace>/<pid>/<start>`)."""
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    query = "SELECT writer_process FROM uploads WHERE id = %s"
    url = server.config().get("database", {}).get("url")
    if url is None:  # SQLite beside the data
        with contextlib.closing(sqlite3.connect(server.data_dir / "registry.db")) as db:
            row = db.execute(query.replace("%s", "?"), (upload_id,)).fetchone()
    else:  # REGISTRY_TEST_DATABASE=postgres
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute(query, (upload_id,)).fetchone()
    assert row is not None
    assert row[0], "the session is claimed while its PATCH streams"
    return int(row[0].split("/")[2])


def _wait_dead(pid: int) -> None:
    """Until the process is gone or a zombie: as dead as a claim check can see."""
    deadline = time.monotonic() + 20
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"worker {pid} still runs"
        time.sleep(0.02)


def test_a_chunked_session_goes_on_in_another_worker_when_its_worker_is_killed(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """Only the worker writing the session dies (SIGKILL mid-PATCH; the master and the other worker live on), with
    the running hash it kept of the PATCHes it answered. Another worker goes on at once from where the bytes end
    in storage, and the closing PUT verifies the whole blob against its digest: what is published is the client's
    blob, byte for byte."""
    server = make_registry(workers=2)
    repo, data = unique_repo("worker-killed"), random_bytes(8 * 1024 * 1024)
    mib = 1024 * 1024
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, repo)
        for start in (0, 2 * mib):  # answered 202 by a worker that keeps their running hash (or its hashing)
            done = client.patch(
                location,
                content=data[start : start + 2 * mib],
                headers={"Content-Range": f"{start}-{start + 2 * mib - 1}"},
            )
            assert done.status_code == 202, done.text
            location = done.headers["Location"]

    sock = _open_patch(server, location, 4 * mib, 4 * mib)
    sock.sendall(data[4 * mib : 6 * mib + 12345])  # the rest never comes: its worker dies first
    _wait_for_storage(server, location, 5 * mib)
    writer = _claim_holder(server, location)
    assert server.proc is not None
    assert writer != server.proc.pid, "a worker, not the master"
    os.kill(writer, signal.SIGKILL)
    _wait_dead(writer)
    sock.close()
    stored = _stored_bytes(server, location)
    assert 4 * mib < stored <= 6 * mib + 12345

    began = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert _recorded_size(status) == stored, "the session goes on from where its bytes end in storage"
        rest = client.patch(location, content=data[stored:], headers={"Content-Range": f"{stored}-{len(data) - 1}"})
        assert rest.status_code == 202, rest.text
        assert rest.headers["Range"] == f"0-{len(data) - 1}"
        put = client.put(with_params(rest.headers["Location"], digest=sha256(data)))
        assert put.status_code == 201, put.text
        assert time.monotonic() - began < 5, "resuming must not wait for a lease"
        blob = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
        assert blob.status_code == 200
        assert blob.content == data
    assert server.proc.poll() is None, "the master lives on"
    _no_server_errors(server)


def test_delete_during_a_slow_patch(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry()
    repo, data = unique_repo("delete-race"), random_bytes(4 * 1024 * 1024)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, repo)
        sock = _open_patch(server, location, 0, len(data))
        sock.sendall(data[: 2 * 1024 * 1024])
        _wait_for_storage(server, location, 1024 * 1024)

        deleted = client.delete(location)
        assert deleted.status_code == 204, deleted.text
        gone = client.get(location)
        assert gone.status_code == 404
        assert "BLOB_UPLOAD_UNKNOWN" in error_codes(gone)

        try:
            sock.sendall(data[2 * 1024 * 1024 :])
            answer = sock.recv(65536).decode(errors="replace")
        except OSError:
            answer = ""  # the server may close the connection once it answered
        finally:
            sock.close()
        if answer:
            assert answer.startswith("HTTP/1.1 404"), answer[:300]
            assert "BLOB_UPLOAD_UNKNOWN" in answer

        put = client.put(with_params(location, digest=sha256(data)))
        assert put.status_code == 404
        assert "BLOB_UPLOAD_UNKNOWN" in error_codes(put)
        assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
    deadline = time.monotonic() + 10
    upload_dir = Path(server.data_dir, "uploads", location.rsplit("/", 1)[1])
    while upload_dir.exists():
        assert time.monotonic() < deadline, "the cancelled upload's data stays behind"
        time.sleep(0.05)
    _no_server_errors(server)
