"""Repository names, tags and digests at the edges of the grammar, and the shape of error answers."""

from __future__ import annotations

import json

import httpx
import pytest

from registry_api import (
    OCI_INDEX,
    assert_error,
    error_codes,
    get_manifest,
    image_manifest,
    on_distribution,
    push,
    push_blob,
    random_bytes,
    raw_http,
    raw_status,
    sha256,
    sha512,
    start_upload,
    unique_repo,
    with_params,
    xfail_on_distribution,
)
from registry_process import RegistryProcess

OCTETS = {"Content-Type": "application/octet-stream"}


def test_nested_names(client: httpx.Client) -> None:
    repo = f"{unique_repo('org')}/team.x/sub-project/deep_er/img"
    data = random_bytes(300)
    digest = push_blob(client, repo, data)
    manifest = image_manifest(client, repo)
    push(client, repo, manifest, "v1")
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    assert get_manifest(client, repo, "v1").content == manifest.body
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
    parent = repo.rsplit("/", 1)[0]
    assert client.get(f"/v2/{parent}/tags/list").status_code == 404


def test_name_of_255_characters_works(client: httpx.Client) -> None:
    prefix = unique_repo("long") + "/"
    repo = prefix + "a" * (255 - len(prefix))
    assert len(repo) == 255
    push(client, repo, image_manifest(client, repo), "v1")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


@xfail_on_distribution("answers 500 UNKNOWN for a name over 255 characters")
def test_name_of_256_characters_is_invalid(client: httpx.Client) -> None:
    prefix = unique_repo("long") + "/"
    repo = prefix + "a" * (256 - len(prefix))
    assert_error(client.post(f"/v2/{repo}/blobs/uploads/"), 400, "NAME_INVALID")
    assert_error(client.get(f"/v2/{repo}/tags/list"), (400, 404), "NAME_INVALID", "NAME_UNKNOWN")


INVALID_NAMES = [
    "UpperCase",
    "ok/Upper",
    "-leading",
    "trailing-",
    "a..b",
    "a/../b",
    "..",
    "a/%2e%2e/b",
    "%2e%2e",
    "a%00b",
    "a//b",
    "a/.b",
    "a b",
    "a%20b",
    "%C3%A9t%C3%A9",
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(registry: RegistryProcess, name: str) -> None:
    """Sent raw, so that no client normalises `..` or encodings away; 404 is allowed for paths that do not route."""
    requests = [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/blobs/{sha256(b'x')}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("DELETE", f"/v2/{name}/manifests/{sha256(b'x')}"),
    ]
    for request_line in requests:
        answer = raw_http(registry.host, *request_line)
        status = raw_status(answer)
        if on_distribution() and status == 301:
            pytest.xfail("CNCF Distribution 2.8 redirects to the cleaned path instead of refusing the name")
        assert status in (400, 404), f"{request_line}: {answer[:300]!r}"
        head, _, body = answer.partition(b"\r\n\r\n")
        if status == 400 and body and b"application/json" in head.lower():
            codes = [error["code"] for error in json.loads(body)["errors"]]
            assert "NAME_INVALID" in codes, f"{request_line}: {body[:300]!r}"


@xfail_on_distribution("does not route an invalid name: a plain-text 404, not NAME_INVALID")
def test_invalid_name_creates_nothing(client: httpx.Client) -> None:
    """Every write naming an invalid repository is 400 NAME_INVALID, and none of them creates the repository,
    under its own spelling or a normalised one."""
    name = unique_repo("Bad-Name")
    data = random_bytes(100)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    answers = {
        "POST upload": client.post(f"/v2/{name}/blobs/uploads/"),
        "POST monolithic": client.post(
            f"/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data, headers=OCTETS
        ),
        "POST mount": client.post(f"/v2/{name}/blobs/uploads/", params={"mount": sha256(data), "from": "x"}),
        "PUT manifest": client.put(f"/v2/{name}/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}),
    }
    repositories = client.get("/v2/_catalog", params={"n": "10000"}).json()["repositories"]
    assert name not in repositories
    assert name.lower() not in repositories
    assert_error(client.get(f"/v2/{name.lower()}/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{name}/tags/list"), 400, "NAME_INVALID")
    for request, response in answers.items():
        assert response.status_code == 400, (request, response.status_code, response.text)
        assert error_codes(response) == ["NAME_INVALID"], request


INVALID_TAGS = ["-dash", ".dot", "a" * 129, "bad%21tag", "sp%20ace", "t%C3%A9"]


@xfail_on_distribution("does not route invalid tags (404 instead of TAG_INVALID)")
@pytest.mark.parametrize("tag", INVALID_TAGS)
def test_invalid_tags_are_refused(client: httpx.Client, tag: str) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    response = client.put(
        f"/v2/{repo}/manifests/{tag}", content=manifest.body, headers={"Content-Type": manifest.media_type}
    )
    assert_error(response, 400, "TAG_INVALID")
    assert get_manifest(client, repo, manifest.digest).status_code == 404


@pytest.mark.parametrize("tag", ["_under", "0", "A" * 128, "V1.0_rc-1", "a..b", "a__b--c"])
def test_unusual_valid_tags(client: httpx.Client, tag: str) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    push(client, repo, manifest, tag)
    assert get_manifest(client, repo, tag).content == manifest.body
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == [tag]


def test_sha512_blobs(client: httpx.Client) -> None:
    repo, data = unique_repo(), random_bytes(50_000)
    digest = push_blob(client, repo, data, sha512(data))
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    # The spec lets a registry answer the digest in its canonical algorithm instead ("another domain").
    assert got.headers["Docker-Content-Digest"] in (digest, sha256(data))
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert int(head.headers["Content-Length"]) == len(data)

    wrong = start_upload(client, repo)
    put = client.put(with_params(wrong, digest=sha512(b"other")), content=data)
    assert_error(put, 400, "DIGEST_INVALID")


def test_error_answers_are_json(client: httpx.Client) -> None:
    response = client.get(f"/v2/{unique_repo()}/blobs/{sha256(b'missing')}")
    assert response.status_code == 404
    assert response.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = response.json()
    assert set(body) == {"errors"}
    for error in body["errors"]:
        assert set(error) <= {"code", "message", "detail"}
        assert isinstance(error["message"], str)
        assert error["message"]


NEITHER_TAG_NOR_DIGEST = [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "sha256:short", "sha256:" + "Z" * 64, "x:y"]


@xfail_on_distribution("a reference that is neither tag nor digest is a plain-text 404 or a 500 UNKNOWN")
@pytest.mark.parametrize("reference", NEITHER_TAG_NOR_DIGEST)
def test_pulling_a_reference_that_is_neither_tag_nor_digest_is_manifest_unknown(
    client: httpx.Client, reference: str
) -> None:
    """No manifest can have such a name, so a pull finds none: 404 MANIFEST_UNKNOWN, as Distribution answers the
    conformance suite's `.INVALID_MANIFEST_NAME` (a push of one is still a client error, see below)."""
    repo = unique_repo()
    push(client, repo, image_manifest(client, repo), "latest")
    got = get_manifest(client, repo, reference)
    assert got.status_code == 404, got.text
    assert error_codes(got) == ["MANIFEST_UNKNOWN"]
    head = get_manifest(client, repo, reference, method="HEAD")
    assert head.status_code == 404
    assert head.content == b""
    assert get_manifest(client, repo, "latest").status_code == 200


@xfail_on_distribution("does not route an invalid tag (plain-text 404); a bad digest is MANIFEST_INVALID")
@pytest.mark.parametrize(
    ("reference", "code"),
    [
        (".INVALID_MANIFEST_NAME", "TAG_INVALID"),
        ("-dash", "TAG_INVALID"),
        ("sha256:short", "DIGEST_INVALID"),
        ("sha256:" + "Z" * 64, "DIGEST_INVALID"),
    ],
)
def test_pushing_to_a_reference_that_is_neither_tag_nor_digest_is_refused(
    client: httpx.Client, reference: str, code: str
) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    response = client.put(
        f"/v2/{repo}/manifests/{reference}", content=manifest.body, headers={"Content-Type": manifest.media_type}
    )
    assert response.status_code == 400, response.text
    assert error_codes(response) == [code]
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")
