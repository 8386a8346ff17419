"""What a client sees of an upload session nobody wrote to yet, of one cancelled or finished, and of ids that are
not a session of the repository they are sent to: the behaviour any change to how sessions begin must keep (the
write-free POST of bench/PROFILE-small-writes.md, eleventh pass, was held to these)."""

from __future__ import annotations

import httpx
import pytest

from registry_api import (
    assert_error,
    random_bytes,
    sha256,
    start_upload,
    unique_repo,
    with_params,
)

OCTETS = {"Content-Type": "application/octet-stream"}


def _unknown_everywhere(client: httpx.Client, location: str) -> None:
    """Every request on the session answers 404 BLOB_UPLOAD_UNKNOWN (HEAD: 404 without a body)."""
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.head(location).status_code == 404
    assert_error(client.patch(location, content=b"data", headers=OCTETS), 404, "BLOB_UPLOAD_UNKNOWN")
    put = client.put(with_params(location, digest=sha256(b"data")), content=b"data", headers=OCTETS)
    assert_error(put, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(with_params(location, digest=sha256(b""))), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")


def _finishes(client: httpx.Client, location: str, repo: str) -> None:
    data = random_bytes(3000)
    assert client.patch(location, content=data, headers=OCTETS).status_code == 202
    assert client.put(with_params(location, digest=sha256(data))).status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_a_fresh_session_answers_its_status(client: httpx.Client) -> None:
    repo = unique_repo()
    post = client.post(f"/v2/{repo}/blobs/uploads/")
    assert post.status_code == 202
    location, upload_id = post.headers["Location"], post.headers["Docker-Upload-UUID"]
    assert post.headers["Range"] == "0-0"
    for method in ("GET", "HEAD"):
        status = client.request(method, location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == "0-0"
        assert status.headers["Docker-Upload-UUID"] == upload_id
        assert status.headers["Location"] == location
    _finishes(client, location, repo)


def test_a_fresh_session_cancelled_is_unknown(client: httpx.Client) -> None:
    repo = unique_repo()
    location = start_upload(client, repo)
    assert client.delete(location).status_code == 204
    _unknown_everywhere(client, location)


def test_a_written_session_cancelled_or_finished_is_unknown(client: httpx.Client) -> None:
    repo = unique_repo()
    cancelled = start_upload(client, repo)
    assert client.patch(cancelled, content=b"abc", headers=OCTETS).status_code == 202
    assert client.delete(cancelled).status_code == 204
    _unknown_everywhere(client, cancelled)
    finished = start_upload(client, repo)
    _finishes(client, finished, repo)
    _unknown_everywhere(client, finished)


def test_a_fresh_session_finished_by_a_put_alone(client: httpx.Client) -> None:
    repo, data = unique_repo(), random_bytes(5000)
    location = start_upload(client, repo)
    assert client.put(with_params(location, digest=sha256(data)), content=data, headers=OCTETS).status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    _unknown_everywhere(client, location)


def test_another_repositorys_id_is_unknown(client: httpx.Client) -> None:
    repo, other = unique_repo(), unique_repo()
    location = start_upload(client, repo)
    elsewhere = location.replace(f"/v2/{repo}/", f"/v2/{other}/")
    assert elsewhere != location
    _unknown_everywhere(client, elsewhere)
    _finishes(client, location, repo)
    written = start_upload(client, repo)  # with a row made by a write: the same
    assert client.patch(written, content=b"abc", headers=OCTETS).status_code == 202
    _unknown_everywhere(client, written.replace(f"/v2/{repo}/", f"/v2/{other}/"))
    assert client.get(written).headers["Range"] == "0-2"


@pytest.mark.parametrize("garbage", ["f" + "a" * 34, "d" + "7" * 33 + "a", "f" + "A" * 34, "x" * 35, "f" * 300])
def test_ids_that_no_post_made_are_unknown(client: httpx.Client, garbage: str) -> None:
    _unknown_everywhere(client, f"/v2/{unique_repo()}/blobs/uploads/{garbage}")
