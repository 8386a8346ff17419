"""The v1 life cycle over HTTP as docker 1.x engines drove it: ping, push (repository, json, layer, checksum, tag,
index images) and pull (index images, tags, ancestry, json, layers resumed with ranges)."""

from __future__ import annotations

import hashlib
import os

import httpx

from registry_api import unique_repo
from registry_process import RegistryProcess
from v1_engine import ENGINE_AGENT, chain, expect, image, pull, push, push_image


def test_ping_answers_as_the_original_did(client: httpx.Client) -> None:
    for path in ("/_ping", "/v1/_ping"):
        answer = expect(client.get(path), 200)
        assert answer.json() == {}
        assert answer.headers["X-Docker-Registry-Standalone"] == "true"
        assert answer.headers["X-Docker-Registry-Version"]
        assert answer.headers["Content-Type"].startswith("application/json")


def test_push_then_pull_a_chain(client: httpx.Client) -> None:
    repo = f"team/{unique_repo()}"
    images = chain({"etc/base": b"root layer"}, {"usr/bin/tool": b"#!/bin/sh\n" * 1000}, {"app/data": b"x" * 70000})
    started = push(client, repo, images)
    assert started.headers["X-Docker-Endpoints"] == client.base_url.netloc.decode()
    assert started.headers["X-Docker-Token"].startswith("Token signature=")

    pulled = pull(client, repo)
    assert [j["id"] for j, _ in pulled] == [i.id for i in reversed(images)]
    for (document, layer), pushed in zip(pulled, reversed(images), strict=True):
        assert layer == pushed.layer
        assert document.get("parent") == pushed.parent

    answer = expect(client.get(f"/v1/images/{images[-1].id}/json"), 200)
    assert answer.content == images[-1].json  # byte for byte, as pushed
    assert answer.headers["X-Docker-Size"] == str(len(images[-1].layer))
    assert answer.headers["X-Docker-Checksum-Payload"] == images[-1].checksum
    assert answer.headers["X-Docker-Payload-Checksum"] == images[-1].checksum
    assert "max-age" in answer.headers["Cache-Control"]

    listed = expect(client.get(f"/v1/repositories/{repo}/images"), 200).json()
    assert sorted(listed, key=lambda e: e["id"]) == sorted(
        ({"id": i.id, "checksum": i.checksum} for i in images), key=lambda e: e["id"]
    )


def test_tags_and_their_json(client: httpx.Client) -> None:
    repo = f"team/{unique_repo()}"
    images = chain({"a": b"1"})
    push(client, repo, images, tag="v1.0")
    top = images[-1].id
    expect(client.put(f"/v1/repositories/{repo}/tags/latest", json=top, headers={"User-Agent": ENGINE_AGENT}), 200)
    assert expect(client.get(f"/v1/repositories/{repo}/tags"), 200).json() == {"latest": top, "v1.0": top}
    assert expect(client.get(f"/v1/repositories/{repo}/tags/v1.0"), 200).json() == top
    described = expect(client.get(f"/v1/repositories/{repo}/tags/latest/json"), 200).json()
    assert described["docker_version"] == "1.6.2"
    assert described["docker_go_version"] == "go1.4.2"
    assert described["arch"] == "amd64"
    assert described["os"] == "linux"
    assert isinstance(described["last_update"], int)
    assert expect(client.get(f"/v1/repositories/{repo}/json"), 200).json() == described
    unknown = expect(client.get(f"/v1/repositories/{repo}/tags/nope/json"), 200).json()
    assert unknown["last_update"] is None


def test_name_without_namespace_is_library(client: httpx.Client) -> None:
    name = unique_repo().replace("/", "-")
    images = chain({"f": b"library"})
    push(client, name, images)
    assert expect(client.get(f"/v1/repositories/library/{name}/tags"), 200).json() == {"latest": images[-1].id}
    manifest = client.get(
        f"/v2/library/{name}/manifests/latest",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    expect(manifest, 200)


def test_layers_compressed_every_way_are_pushed_and_pulled(client: httpx.Client) -> None:
    for compression in ("gzip", "xz", "bzip2", "none"):
        repo = f"team/{unique_repo()}"
        images = chain({"f": compression.encode() * 5000}, {"g": b"second"}, compression=compression)
        push(client, repo, images)
        assert [layer for _, layer in pull(client, repo)] == [i.layer for i in reversed(images)]


def test_layer_ranges_and_conditional_gets(client: httpx.Client) -> None:
    repo = f"team/{unique_repo()}"
    images = chain({"f": bytes(range(256)) * 400})
    push(client, repo, images)
    image_id, layer = images[0].id, images[0].layer
    size = len(layer)
    whole = expect(client.get(f"/v1/images/{image_id}/layer"), 200)
    assert whole.content == layer
    assert whole.headers["Content-Length"] == str(size)
    assert whole.headers["Accept-Ranges"] == "bytes"
    # the original sent one byte fewer than an open-ended range announced: here what is announced is what comes
    tail = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": "bytes=10-"}), 206)
    assert tail.content == layer[10:]
    assert tail.headers["Content-Length"] == str(size - 10)
    assert tail.headers["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    one = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": "bytes=5-5"}), 206)
    assert one.content == layer[5:6]
    suffix = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": "bytes=-7"}), 206)
    assert suffix.content == layer[-7:]
    # a HEAD gets the GET's headers and no body: bytes sent after it would be read as the next answer on the
    # connection, the GET that follows here
    head = expect(client.head(f"/v1/images/{image_id}/layer"), 200)
    assert head.headers["Content-Length"] == str(size)
    assert expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": "bytes=1-2"}), 206).content == layer[1:3]
    beyond = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": f"bytes={size}-"}), 416)
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    assert "error" in beyond.json()
    for path in ("layer", "json", "ancestry"):
        cached = client.get(
            f"/v1/images/{image_id}/{path}", headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}
        )
        expect(cached, 304)
        assert cached.content == b""
        assert "max-age" in cached.headers["Cache-Control"]


def test_layers_are_content_addressed_blobs(client: httpx.Client) -> None:
    """Two images with identical layer bytes share one blob, served by v2 under the sha256 of those bytes."""
    repo = f"team/{unique_repo()}"
    first = image({"same": b"content"})
    push(client, repo, [first])
    digest = "sha256:" + hashlib.sha256(first.layer).hexdigest()
    blob = expect(client.get(f"/v2/{repo}/blobs/{digest}"), 200)
    assert blob.content == first.layer


def test_files_listing_of_plain_gzip_and_xz_layers_with_whiteouts(client: httpx.Client) -> None:
    repo = f"team/{unique_repo()}"
    for compression in ("none", "gzip", "xz"):
        base = image({"etc/passwd": b"root:x:0:0", "etc/group": b"root:x:0:"}, compression=compression)
        top = image(
            {"etc/hosts": b"127.0.0.1 localhost"}, base, deleted=("etc/group", ".secret"), compression=compression
        )
        push(client, repo, [base, top])
        listing = expect(client.get(f"/v1/images/{top.id}/files"), 200).json()
        by_path = {entry[0]: entry for entry in listing}
        assert by_path["/etc"][1] == "d"
        assert by_path["/etc/hosts"][1:4] == ["f", False, len(b"127.0.0.1 localhost")]
        assert by_path["/etc/group"][2] is True  # a whiteout in a directory: deleted (the original missed these)
        assert by_path["/.secret"][2] is True
        assert not any(".wh." in path for path in by_path)
        assert by_path["/etc/hosts"][4:] == [1_400_000_000, 0o644, 0, 0]


def test_an_empty_layer_is_an_empty_200(client: httpx.Client) -> None:
    """The original answered 416 for a layer of no bytes."""
    empty = image({})
    empty.layer = b""
    push(client, f"team/{unique_repo()}", [empty])
    answer = expect(client.get(f"/v1/images/{empty.id}/layer"), 200)
    assert answer.content == b""
    assert answer.headers["Content-Length"] == "0"
    assert expect(client.get(f"/v1/images/{empty.id}/json"), 200).headers["X-Docker-Size"] == "0"


def test_a_broken_gzip_layer_is_served_but_cannot_be_tagged(client: httpx.Client) -> None:
    broken = image({"f": b"x" * 1000})
    broken.layer = broken.layer[:-20]  # the gzip stream stops before its end
    name = f"team/{unique_repo()}"
    push_image(client, broken)
    assert expect(client.get(f"/v1/images/{broken.id}/layer"), 200).content == broken.layer
    answer = expect(client.put(f"/v1/repositories/{name}/tags/latest", json=broken.id), 400)
    assert "not a valid compressed tar" in answer.json()["error"]


def test_a_layer_gone_from_storage_is_a_clean_404(registry: RegistryProcess, client: httpx.Client) -> None:
    gone = image({"f": os.urandom(1000)})
    push(client, f"team/{unique_repo()}", [gone])
    hexdigest = hashlib.sha256(gone.layer).hexdigest()
    (registry.data_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data").unlink()
    answer = expect(client.get(f"/v1/images/{gone.id}/layer"), 404)
    assert answer.json() == {"error": "Image layer missing from storage"}
    assert expect(client.get(f"/v1/images/{gone.id}/files"), 404).json() == {
        "error": "Image layer missing from storage"
    }


def test_files_of_a_layer_that_is_no_tar(client: httpx.Client) -> None:
    odd = image({})
    odd.layer = b"these bytes are no tar archive at all" * 20
    push_image(client, odd)
    assert "is not a tar" in expect(client.get(f"/v1/images/{odd.id}/files"), 400).json()["error"]
