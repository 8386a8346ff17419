"""Deletes of manifests, tags and blobs; and registries configured without deletes or read-only."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from registry_api import (
    assert_error,
    get_manifest,
    image_manifest,
    push,
    push_blob,
    random_bytes,
    sha256,
    start_upload,
    unique_repo,
    xfail_on_distribution,
)
from registry_process import RegistryProcess


def _tags(client: httpx.Client, repo: str) -> list[str]:
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200, response.text
    return response.json().get("tags") or []


def test_delete_manifest_by_digest(client: httpx.Client) -> None:
    repo = unique_repo()
    doomed, kept = image_manifest(client, repo), image_manifest(client, repo)
    push(client, repo, doomed, "a")
    push(client, repo, doomed, "b")
    push(client, repo, kept, "c")

    assert client.delete(f"/v2/{repo}/manifests/{doomed.digest}").status_code == 202
    assert_error(get_manifest(client, repo, doomed.digest), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, "a"), 404, "MANIFEST_UNKNOWN")
    assert get_manifest(client, repo, "b", "HEAD").status_code == 404
    assert _tags(client, repo) == ["c"]
    assert get_manifest(client, repo, "c").content == kept.body
    assert_error(client.delete(f"/v2/{repo}/manifests/{doomed.digest}"), 404, "MANIFEST_UNKNOWN")


@xfail_on_distribution("does not delete by tag")
def test_delete_by_tag_removes_only_that_tag(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    push(client, repo, manifest, "one")
    push(client, repo, manifest, "two")
    assert client.delete(f"/v2/{repo}/manifests/one").status_code == 202
    assert_error(get_manifest(client, repo, "one"), 404, "MANIFEST_UNKNOWN")
    assert get_manifest(client, repo, "two").content == manifest.body
    assert get_manifest(client, repo, manifest.digest).content == manifest.body
    assert _tags(client, repo) == ["two"]
    assert_error(client.delete(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")
    assert client.delete(f"/v2/{repo}/manifests/two").status_code == 202
    assert _tags(client, repo) == []  # the repository is still there, with its untagged manifest
    assert get_manifest(client, repo, manifest.digest).content == manifest.body


def test_delete_blob(client: httpx.Client) -> None:
    repo, data = unique_repo(), random_bytes(500)
    digest = push_blob(client, repo, data)
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_in_one_repository_keeps_it_in_another(client: httpx.Client) -> None:
    repo, other, data = unique_repo(), unique_repo(), random_bytes(500)
    digest = push_blob(client, repo, data)
    push_blob(client, other, data)
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/{other}/blobs/{digest}").content == data


def test_mount_of_a_deleted_blob_starts_an_upload(client: httpx.Client) -> None:
    source, target, data = unique_repo("src"), unique_repo("dst"), random_bytes(600)
    digest = push_blob(client, source, data)
    assert client.delete(f"/v2/{source}/blobs/{digest}").status_code == 202
    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert response.status_code == 202, response.text
    assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404


def test_manifest_needs_blobs_that_were_not_deleted(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    layer = json.loads(manifest.body)["layers"][0]["digest"]
    assert client.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
    response = client.put(
        f"/v2/{repo}/manifests/late", content=manifest.body, headers={"Content-Type": manifest.media_type}
    )
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


def test_delete_unknown(client: httpx.Client) -> None:
    repo = unique_repo()
    push(client, repo, image_manifest(client, repo), "x")
    assert_error(client.delete(f"/v2/{repo}/manifests/{sha256(b'nope')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/blobs/{sha256(b'nope')}"), 404, "BLOB_UNKNOWN")
    missing_repo = unique_repo("missing")
    response = client.delete(f"/v2/{missing_repo}/manifests/{sha256(b'nope')}")
    assert_error(response, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")


def test_deletes_disabled(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(delete_enabled=False)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        repo = unique_repo()
        manifest = image_manifest(client, repo)
        push(client, repo, manifest, "kept")
        blob = json.loads(manifest.body)["layers"][0]["digest"]
        assert_error(client.delete(f"/v2/{repo}/manifests/{manifest.digest}"), 405, "UNSUPPORTED")
        assert_error(client.delete(f"/v2/{repo}/manifests/kept"), 405, "UNSUPPORTED")
        assert_error(client.delete(f"/v2/{repo}/blobs/{blob}"), 405, "UNSUPPORTED")
        assert get_manifest(client, repo, "kept").content == manifest.body
        assert client.head(f"/v2/{repo}/blobs/{blob}").status_code == 200


@xfail_on_distribution("read-only mode answers some writes with a plain-text 405, not UNSUPPORTED")
def test_read_only(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        repo = unique_repo()
        manifest = image_manifest(client, repo)
        push(client, repo, manifest, "frozen")
        location = start_upload(client, repo)

    server.extra_config = {**server.extra_config, "storage": {"maintenance": {"readonly": {"enabled": True}}}}
    server.restart()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert get_manifest(client, repo, "frozen").content == manifest.body
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["frozen"]
        assert client.get("/v2/_catalog").status_code == 200

        writes = [
            client.post(f"/v2/{repo}/blobs/uploads/"),
            client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"),
            client.patch(location, content=b"chunk", headers={"Content-Type": "application/octet-stream"}),
            client.put(str(httpx.URL(location).copy_merge_params({"digest": sha256(b"")}))),
            client.put(
                f"/v2/{repo}/manifests/other", content=manifest.body, headers={"Content-Type": manifest.media_type}
            ),
            client.delete(f"/v2/{repo}/manifests/{manifest.digest}"),
        ]
        for response in writes:
            assert_error(response, 405, "UNSUPPORTED")
        assert get_manifest(client, repo, "other").status_code == 404
        assert get_manifest(client, repo, manifest.digest).content == manifest.body
