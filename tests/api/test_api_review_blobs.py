"""Blob GET and HEAD agree on the ETag, honour If-None-Match, and report a blob lost from storage as JSON."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from registry_api import assert_error, push_blob, random_bytes, sha256, unique_repo, with_params
from registry_process import RegistryProcess


@pytest.fixture
def blob(client: httpx.Client) -> tuple[str, bytes]:
    repo = unique_repo("etag")
    data = random_bytes(70_000)
    push_blob(client, repo, data)
    return f"/v2/{repo}/blobs/{sha256(data)}", data


def test_get_and_head_carry_the_digest_as_etag(client: httpx.Client, blob: tuple[str, bytes]) -> None:
    url, data = blob
    etag = f'"{sha256(data)}"'
    got = client.get(url)
    assert got.content == data
    assert got.headers["ETag"] == etag
    assert client.head(url).headers["ETag"] == etag
    ranged = client.get(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == data[10:20]
    assert ranged.headers["ETag"] == etag


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("template", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_if_none_match_with_the_digest_is_not_modified(
    client: httpx.Client, blob: tuple[str, bytes], method: str, template: str
) -> None:
    url, data = blob
    etag = f'"{sha256(data)}"'
    response = client.request(method, url, headers={"If-None-Match": template.format(etag=etag)})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == etag


def test_if_none_match_with_another_tag_gets_the_content(client: httpx.Client, blob: tuple[str, bytes]) -> None:
    url, data = blob
    response = client.get(url, headers={"If-None-Match": '"0-0"'})
    assert response.status_code == 200
    assert response.content == data


def test_if_match_with_the_digest_gets_the_content(client: httpx.Client, blob: tuple[str, bytes]) -> None:
    url, data = blob
    response = client.get(url, headers={"If-Match": f'"{sha256(data)}"'})
    assert response.status_code == 200
    assert response.content == data


def test_blob_missing_from_storage_is_blob_unknown(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry()
    with httpx.Client(base_url=server.url, timeout=30) as own:
        repo = unique_repo("lost")
        data = random_bytes(5000)
        digest = push_blob(own, repo, data)
        for path in server.data_dir.rglob("data"):
            if path.parent.name == digest.split(":")[1]:
                path.unlink()
        response = own.get(f"/v2/{repo}/blobs/{digest}")
        assert_error(response, 404, "BLOB_UNKNOWN")
        assert response.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("source", ["UPPER/case", "../escape", "a" * 300, "trailing/"])
def test_mount_from_an_invalid_name_starts_an_upload(client: httpx.Client, source: str) -> None:
    """The spec: a registry unable to mount SHOULD start a normal upload; the push then goes on as usual."""
    target, data = unique_repo("dst"), random_bytes(3000)
    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": sha256(data), "from": source})
    assert response.status_code == 202, response.text
    finished = client.put(with_params(response.headers["Location"], digest=sha256(data)), content=data)
    assert finished.status_code == 201, finished.text
    assert client.get(f"/v2/{target}/blobs/{sha256(data)}").content == data
