"""A worker killed with SIGKILL in the middle of a burst of small pushes (issue 15): group commit answers many
pushes with one commit, so a kill between commit and answers must still leave every acknowledged blob in place,
verified, and nothing half-stored."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from docker_registry.server.registry.process_identity import this_process
from docker_registry.server.registry.upload_area import upload_path
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="worker processes of docker-registry 3")


def test_every_acknowledged_small_push_survives_a_killed_worker(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    server = make_registry(workers=2)
    stop = threading.Event()
    acknowledged: list[tuple[str, bytes]] = []
    unanswered: list[tuple[str, bytes, str | None]] = []
    lock = threading.Lock()

    def pusher(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                data = f"pusher {n} blob {i} {os.urandom(8).hex()}".encode() * 50
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                repo = f"crash/p{n}"
                location = None
                try:
                    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
                    response = client.put(location, params={"digest": digest}, content=data)
                    ok = response.status_code == 201
                except (httpx.TransportError, KeyError):
                    ok = False
                with lock:
                    if ok:
                        acknowledged.append((f"{repo}@{digest}", data))
                    else:
                        unanswered.append((f"{repo}@{digest}", data, location))
                i += 1

    def acknowledged_count(at_least: int) -> None:
        """Counted in pushes, not seconds: on a loaded machine 3 s of burst acknowledged 40, too few to matter."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(acknowledged) >= at_least:
                    return
            time.sleep(0.02)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    acknowledged_count(60)
    workers = [int(pid) for pid in re.findall(r"worker \d+ ready \(pid (\d+)\)", server.log_path.read_text())]
    os.kill(workers[0], signal.SIGKILL)
    with lock:
        before_kill = len(acknowledged)
    acknowledged_count(before_kill + 60)  # the burst goes on, the killed worker's connections moved to the other
    stop.set()
    for thread in threads:
        thread.join()

    assert len(acknowledged) > 100, "the burst was too small to mean anything"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for where, data in acknowledged:
            repo, digest = where.split("@")
            got = client.get(f"/v2/{repo}/blobs/{digest}")
            assert got.status_code == 200, f"acknowledged {where} is gone"
            assert got.content == data
        for where, data, location in unanswered:
            repo, digest = where.split("@")
            got = client.get(f"/v2/{repo}/blobs/{digest}")
            assert got.status_code in (200, 404), got.text  # stored whole, or not at all
            if got.status_code == 200:
                assert got.content == data
            elif location is not None:  # its session is resumable, or was ended: never an error
                assert client.get(location).status_code in (204, 404)


def test_a_session_whose_bytes_are_gone_under_a_dead_writer_is_unknown_not_empty(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """A writer killed between publishing a session's bytes and linking them leaves its claim on a session with no
    data. Taken over, that session looked empty: a PATCH at 0 restarted it silently and the client's closing PUT
    was a wrong digest (400). It is ended instead: BLOB_UPLOAD_UNKNOWN, and the client starts again."""
    server = make_registry(workers=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post("/v2/crash/gone/blobs/uploads/").headers["Location"]
        data = os.urandom(4096)
        assert client.patch(location, content=data, headers={"Content-Range": "0-4095"}).status_code == 202
        upload_id = location.rstrip("/").rsplit("/", 1)[1]
        identity = this_process()
        assert identity is not None
        dead = "/".join([*identity.split("/")[:2], "4194000", "1"])  # this host, no such process
        with sqlite3.connect(server.data_dir / "registry.db") as db:
            db.execute(
                "UPDATE uploads SET writer = 'killed', writer_since = ?, writer_process = ? WHERE id = ?",
                (time.time(), dead, upload_id),
            )
        (server.data_dir / upload_path(upload_id)).unlink()  # moved to the blob's path before the kill
        status = client.get(location)
        assert status.status_code == 404, status.headers
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert client.patch(location, content=data, headers={"Content-Range": "0-4095"}).status_code == 404
