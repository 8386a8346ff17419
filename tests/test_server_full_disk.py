"""A full disk under a real registry process: a tmpfs of a few MiB of our own (root only, as CI runs)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from registry_api import image_manifest, push
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="full-disk behaviour of docker-registry 3")

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root: mounting a tmpfs must work")
        pytest.skip("needs root to mount a tmpfs (run the suite as root, as CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_out_of_space(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert "Retry-After" not in response.headers, "retrying does not free space"
    assert "out of storage space" in response.json()["errors"][0]["message"]


def test_a_blob_larger_than_the_free_space_is_refused_cleanly(
    make_registry: Callable[..., RegistryProcess], small_disk: Path
) -> None:
    server = make_registry(
        storage={"filesystem": {"rootdirectory": str(small_disk / "data")}, "delete": {"enabled": True}}
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        small = os.urandom(64 * 1024)
        assert (
            client.post("/v2/full/blobs/uploads/", params={"digest": digest_of(small)}, content=small).status_code
            == 201
        )
        huge = os.urandom(30 * MiB)
        assert_out_of_space(client.post("/v2/full/blobs/uploads/", params={"digest": digest_of(huge)}, content=huge))
        assert client.delete(f"/v2/full/blobs/{digest_of(small)}").status_code == 202, "deletes work on a full disk"
        uploads = small_disk / "data" / "uploads"
        assert not uploads.exists() or not any(uploads.iterdir()), "the partial upload's data was removed"
        again = os.urandom(1 * MiB)
        assert (
            client.post("/v2/full/blobs/uploads/", params={"digest": digest_of(again)}, content=again).status_code
            == 201
        )
        assert client.get(f"/v2/full/blobs/{digest_of(again)}").content == again


def test_uploads_are_refused_early_below_minfree(
    make_registry: Callable[..., RegistryProcess], small_disk: Path
) -> None:
    server = make_registry(
        storage={
            "filesystem": {"rootdirectory": str(small_disk / "data")},
            "delete": {"enabled": True},
            "minfree": "10MiB",
        }
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        first = os.urandom(6 * MiB)
        assert (
            client.post("/v2/min/blobs/uploads/", params={"digest": digest_of(first)}, content=first).status_code == 201
        )
        second = os.urandom(6 * MiB)
        assert_out_of_space(client.post("/v2/min/blobs/uploads/", params={"digest": digest_of(second)}, content=second))
        response = client.post("/v2/min/blobs/uploads/")
        assert_out_of_space(response)
        assert "storage.minfree" in response.json()["errors"][0]["message"]
        assert client.get(f"/v2/min/blobs/{digest_of(first)}").content == first, "pulls go on"


def test_deletes_work_on_a_disk_filled_to_the_last_byte(
    make_registry: Callable[..., RegistryProcess], small_disk: Path
) -> None:
    """The way out of a full disk is deleting: tags, manifests and blob links must still be removable when not one
    byte is free (SQLite rewrites its log in place and a delete does not grow the database)."""
    server = make_registry(
        storage={"filesystem": {"rootdirectory": str(small_disk / "data")}, "delete": {"enabled": True}}
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        repo = "fill/up"
        image = image_manifest(client, repo)
        assert push(client, repo, image, "v1").status_code == 201
        for i in range(30):  # some history in the database's log before the disk fills
            assert (
                client.put(
                    f"/v2/{repo}/manifests/t{i}", content=image.body, headers={"Content-Type": image.media_type}
                ).status_code
                == 201
            )
        filler = small_disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (256 * 1024))
                f.flush()
        with contextlib.suppress(OSError), filler.open("ab") as f:
            while True:
                f.write(b"\0")
                f.flush()
        assert os.statvfs(small_disk).f_bavail == 0
        assert_out_of_space(client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(b"x")}, content=b"x"))
        assert client.delete(f"/v2/{repo}/manifests/t0").status_code == 202
        assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
        assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404
        layer = json.loads(image.body)["layers"][0]["digest"]
        assert client.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
        assert client.head(f"/v2/{repo}/blobs/{layer}").status_code == 404


def test_storage_made_read_only_is_unavailable_not_an_error(
    make_registry: Callable[..., RegistryProcess], small_disk: Path, tmp_path: Path
) -> None:
    """Storage remounted read-only (what Linux does after an I/O error, or an operator's snapshot) answers uploads
    and cancels 503 with Retry-After, not 500, and they work again once it is writable; reads go on throughout."""
    server = make_registry(
        storage={"filesystem": {"rootdirectory": str(small_disk / "data")}, "delete": {"enabled": True}},
        extra_config={"database": {"url": f"sqlite:///{tmp_path / 'registry.db'}"}},
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        kept = os.urandom(64 * 1024)
        assert client.post("/v2/ro/blobs/uploads/", params={"digest": digest_of(kept)}, content=kept).status_code == 201
        session = client.post("/v2/ro/blobs/uploads/").headers["Location"]
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        try:
            data = os.urandom(2 * MiB)
            for answer in (
                client.post("/v2/ro/blobs/uploads/", params={"digest": digest_of(data)}, content=data),
                client.patch(session, content=data, headers={"Content-Range": f"0-{len(data) - 1}"}),
            ):
                assert answer.status_code == 503, answer.text
                assert "Retry-After" in answer.headers
            assert client.get(f"/v2/ro/blobs/{digest_of(kept)}").content == kept
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        assert client.post("/v2/ro/blobs/uploads/", params={"digest": digest_of(data)}, content=data).status_code == 201
        assert client.get(f"/v2/ro/blobs/{digest_of(data)}").content == data


def test_the_room_the_database_reserve_leaves_is_for_deletes_not_uploads(
    make_registry: Callable[..., RegistryProcess], small_disk: Path
) -> None:
    """A commit that finds the disk full gives up the database's 8 MiB reserve so deletes can go on. Uploads that
    came next took that room until the disk was full to the last byte, and then every delete answered 507 too.
    Now new blob bytes are refused while the reserve is given up; deletes go through; once they freed room the
    reserve is made again and uploads work."""
    server = make_registry(
        storage={"filesystem": {"rootdirectory": str(small_disk / "data")}, "delete": {"enabled": True}}
    )
    reserve = small_disk / "data" / "registry.db.reserve"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        repo = "room/kept"
        image = image_manifest(client, repo)
        assert push(client, repo, image, "v1").status_code == 201
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        huge = os.urandom(30 * MiB)
        assert_out_of_space(client.patch(location, content=huge, headers={"Content-Range": f"0-{len(huge) - 1}"}))
        assert not reserve.exists(), "the upload's release found the disk full and gave the reserve up"
        for size in (MiB, 64 * 1024, 512):
            data = os.urandom(size)
            assert_out_of_space(
                client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
            )
        assert client.delete(location).status_code == 204  # the partial upload's 16 MiB go
        assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202
        assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
        data = os.urandom(MiB)
        deadline = time.monotonic() + 5
        while (
            answer := client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
        ).status_code == 507:
            assert time.monotonic() < deadline, "uploads stayed refused with room free again"
            time.sleep(0.3)
        assert answer.status_code == 201, answer.text
        assert reserve.exists()
