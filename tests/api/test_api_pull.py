"""Pulling: the version check, manifests of every media type by tag and digest, blobs with and without ranges."""

from __future__ import annotations

import httpx
import pytest

from registry_api import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    Pushed,
    assert_error,
    byteranges,
    get_manifest,
    image_manifest,
    index_manifest,
    push,
    push_blob,
    random_bytes,
    sha256,
    unique_repo,
    xfail_on_distribution,
)
from registry_process import RegistryProcess


def test_version_check(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_version_check_head(client: httpx.Client) -> None:
    response = client.head("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.content == b""


def _artifact(client: httpx.Client, repo: str) -> Pushed:
    return image_manifest(
        client,
        repo,
        config=b"{}",
        config_media_type=OCI_EMPTY,
        artifact_type="application/vnd.example.sbom.v1+json",
        annotations={"org.example.kind": "sbom"},
    )


def _custom_config(client: httpx.Client, repo: str) -> Pushed:
    return image_manifest(client, repo, config=b'{"helm": true}', config_media_type="application/vnd.cncf.helm.config")


def _docker_list(client: httpx.Client, repo: str) -> Pushed:
    children = [image_manifest(client, repo, media_type=DOCKER_MANIFEST) for _ in range(2)]
    for child in children:
        push(client, repo, child)
    return index_manifest(children, DOCKER_LIST)


def _oci_index(client: httpx.Client, repo: str) -> Pushed:
    children = [image_manifest(client, repo) for _ in range(2)]
    for child in children:
        push(client, repo, child)
    return index_manifest(children, OCI_INDEX)


BUILDERS = {
    "docker-schema2": lambda client, repo: image_manifest(client, repo, media_type=DOCKER_MANIFEST, layers=2),
    "docker-list": _docker_list,
    "oci-manifest": lambda client, repo: image_manifest(client, repo, layers=3),
    "oci-index": _oci_index,
    "oci-artifact": _artifact,
    "oci-custom-config": _custom_config,
}


@pytest.mark.parametrize("kind", BUILDERS)
def test_manifest_round_trip_by_tag_and_digest(client: httpx.Client, kind: str) -> None:
    repo = unique_repo(kind)
    manifest = BUILDERS[kind](client, repo)
    response = push(client, repo, manifest, "v1")
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    assert response.headers["Location"]

    for reference in ("v1", manifest.digest):
        got = get_manifest(client, repo, reference)
        assert got.status_code == 200, got.text
        assert got.content == manifest.body
        assert got.headers["Content-Type"] == manifest.media_type
        assert got.headers["Docker-Content-Digest"] == manifest.digest
        assert int(got.headers["Content-Length"]) == len(manifest.body)

        head = get_manifest(client, repo, reference, "HEAD")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["Content-Type"] == manifest.media_type
        assert head.headers["Docker-Content-Digest"] == manifest.digest
        assert int(head.headers["Content-Length"]) == len(manifest.body)


def test_unknown_manifest_in_known_repo(client: httpx.Client) -> None:
    repo = unique_repo()
    push(client, repo, image_manifest(client, repo), "present")
    assert_error(get_manifest(client, repo, "absent"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, sha256(b"absent")), 404, "MANIFEST_UNKNOWN")
    head = get_manifest(client, repo, "absent", "HEAD")
    assert head.status_code == 404
    assert head.content == b""


def test_unknown_repository(client: httpx.Client) -> None:
    repo = unique_repo("never-pushed")
    assert_error(get_manifest(client, repo, "latest"), 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/{sha256(b'x')}"), 404, "NAME_UNKNOWN", "BLOB_UNKNOWN")


@pytest.fixture(scope="module")
def blob_repo(registry: RegistryProcess) -> tuple[str, bytes, str]:
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        repo = unique_repo("blobs")
        data = random_bytes(100_000)
        return repo, data, push_blob(c, repo, data)


def test_blob_get_and_head(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    repo, data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["Docker-Content-Digest"] == digest
    assert int(got.headers["Content-Length"]) == len(data)

    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Docker-Content-Digest"] == digest
    assert int(head.headers["Content-Length"]) == len(data)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        ("bytes=99990-", 99990, 99999),
        ("bytes=-25", 99975, 99999),
        ("bytes=50000-200000", 50000, 99999),
        ("bytes=0-99999999999999999999", 0, 99999),
        ("bytes= 0-1", 0, 1),
    ],
)
def test_blob_range(
    client: httpx.Client, blob_repo: tuple[str, bytes, str], range_header: str, start: int, end: int
) -> None:
    repo, data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": range_header})
    assert got.status_code == 206, got.text
    assert got.content == data[start : end + 1]
    assert got.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert int(got.headers["Content-Length"]) == end - start + 1


def test_blob_head_with_range(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    repo, _data, digest = blob_repo
    head = client.head(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert head.status_code in (200, 206)
    assert head.content == b""
    if head.status_code == 206:
        assert head.headers["Content-Range"] == "bytes 10-19/100000"
        assert head.headers["Content-Length"] == "10"


@xfail_on_distribution("answers 416 announcing the whole blob's Content-Length, then sends a short body")
@pytest.mark.parametrize("range_header", ["bytes=100000-", "bytes=200000-300000", "bytes=-0"])
def test_blob_range_not_satisfiable(client: httpx.Client, blob_repo: tuple[str, bytes, str], range_header: str) -> None:
    repo, _data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": range_header})
    assert got.status_code == 416
    assert got.headers.get("Content-Range") == "bytes */100000"


def test_a_range_in_other_digits_than_ascii_is_ignored(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    """A Range that does not parse is ignored (RFC 9110): full-width digits (U+FF10-U+FF19) make no range, and the
    blob comes whole."""
    repo, data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=\uff10-\uff15".encode()})
    assert got.status_code == 200
    assert got.content == data


def test_blob_multiple_ranges(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    """Several ranges are one multipart/byteranges answer, in the order asked (zstd:chunked and eStargz pulls ask
    for the files they lack this way); ranges past the end are left out, and one range left is a plain 206."""
    repo, data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=20-29, 0-9,-5,500000-"})
    assert byteranges(got) == [
        ("bytes 20-29/100000", data[20:30]),
        ("bytes 0-9/100000", data[0:10]),
        ("bytes 99995-99999/100000", data[99995:]),
    ]
    one_left = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=5-9,200000-"})
    assert one_left.status_code == 206
    assert one_left.headers["Content-Range"] == "bytes 5-9/100000"
    assert one_left.content == data[5:10]


def test_blob_ranges_adding_up_to_more_than_the_blob_get_it_whole(
    client: httpx.Client, blob_repo: tuple[str, bytes, str]
) -> None:
    """A few bytes of header asking for the same bytes many times over must not cost a large answer: served as
    the blob itself, once."""
    repo, data, digest = blob_repo
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": ",".join(["bytes=0-"] + ["0-"] * 50)})
    assert got.status_code == 200
    assert got.content == data


def test_a_thousand_ranges_in_one_request(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    """containers/storage asks for up to 1,024 chunks of a zstd:chunked layer at once: a header of some 25 KB with
    a large layer's offsets (written here with leading zeros, which the grammar allows)."""
    repo, data, digest = blob_repo
    windows = [(start, start + 9) for start in range(0, 100_000, 97)][:1024]
    header = "bytes=" + ",".join(f"{start:010d}-{end:010d}" for start, end in windows)
    assert len(header) > 20_000
    parts = byteranges(client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header}))
    assert parts == [(f"bytes {start}-{end}/100000", data[start : end + 1]) for start, end in windows]
    windows.append((99_990, 99_999))  # one more than a pull asks for at once: the blob, whole
    header = "bytes=" + ",".join(f"{start}-{end}" for start, end in windows)
    whole = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert (whole.status_code, whole.content) == (200, data)


@pytest.mark.parametrize(
    ("if_range", "ranged"),
    [("{etag}", True), ('"sha256:0000"', False), ('W/"{digest}"', False), ("Mon, 07 Dec 2026 00:00:00 GMT", False)],
)
def test_if_range_serves_the_range_only_for_the_blobs_own_tag(
    client: httpx.Client, blob_repo: tuple[str, bytes, str], if_range: str, ranged: bool
) -> None:
    """RFC 9110 13.1.5: `If-Range` naming another representation (or a weak tag, or a date: blobs carry no
    `Last-Modified`) asks for the whole blob instead of the range."""
    repo, data, digest = blob_repo
    etag = client.head(f"/v2/{repo}/blobs/{digest}").headers["ETag"]
    headers = {"Range": "bytes=10-19", "If-Range": if_range.format(etag=etag, digest=digest)}
    got = client.get(f"/v2/{repo}/blobs/{digest}", headers=headers)
    assert (got.status_code, got.content) == ((206, data[10:20]) if ranged else (200, data))


def test_unknown_blob(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    repo, _data, _digest = blob_repo
    missing = sha256(b"no such blob " + random_bytes(8))
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    head = client.head(f"/v2/{repo}/blobs/{missing}")
    assert head.status_code == 404
    assert head.content == b""


def test_blob_is_scoped_to_its_repository(client: httpx.Client, blob_repo: tuple[str, bytes, str]) -> None:
    repo, data, digest = blob_repo
    other = unique_repo("other")
    push_blob(client, other, random_bytes(10))  # the other repository exists, just without this blob
    assert_error(client.get(f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{other}/blobs/{digest}").status_code == 404

    mounted = client.post(f"/v2/{other}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert mounted.status_code == 201
    assert client.get(f"/v2/{other}/blobs/{digest}").content == data
