"""Manifest pushes: what the registry answers, and the validation that keeps broken manifests out."""

from __future__ import annotations

import json

import httpx
import pytest

from registry_api import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Pushed,
    assert_error,
    canonical,
    error_codes,
    get_manifest,
    image_manifest,
    index_manifest,
    push,
    push_blob,
    put_manifest,
    sha256,
    unique_repo,
    xfail_on_distribution,
)

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


def _assert_absent(client: httpx.Client, repo: str, *references: str) -> None:
    for reference in references:
        assert get_manifest(client, repo, reference).status_code == 404


def test_put_by_tag_answers_created_with_location_and_digest(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    response = put_manifest(client, repo, "latest", manifest.body, manifest.media_type)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    pulled = client.get(response.headers["Location"], headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200
    assert pulled.content == manifest.body


def test_put_by_digest(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    response = put_manifest(client, repo, manifest.digest, manifest.body, manifest.media_type)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    assert get_manifest(client, repo, manifest.digest).content == manifest.body
    assert client.get(f"/v2/{repo}/tags/list").json().get("tags") in (None, [])


def test_retagging_moves_the_tag(client: httpx.Client) -> None:
    repo = unique_repo()
    first, second = image_manifest(client, repo), image_manifest(client, repo)
    push(client, repo, first, "moving")
    push(client, repo, second, "moving")
    assert get_manifest(client, repo, "moving").content == second.body
    assert get_manifest(client, repo, first.digest).content == first.body


def test_not_json(client: httpx.Client) -> None:
    repo = unique_repo()
    image_manifest(client, repo)  # the repository exists
    for body in (b"not json at all", b"", b"[1, 2, 3]", b'{"schemaVersion": 2, "layers": "nope"}', b"\xff\xfe{"):
        assert_error(put_manifest(client, repo, "broken", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    _assert_absent(client, repo, "broken")


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000],
    ids=["deep-array", "deep-object"],
)
def test_deeply_nested_json(client: httpx.Client, body: bytes) -> None:
    repo = unique_repo()
    image_manifest(client, repo)
    assert_error(put_manifest(client, repo, "deep", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    assert client.get("/v2/").status_code == 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_manifest_must_be_utf8_json(client: httpx.Client, encoding: str) -> None:
    """Go clients (docker, containerd) cannot parse a UTF-16 manifest or one with a BOM; storing it breaks pulls."""
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    body = manifest.body.decode().encode(encoding)
    assert_error(put_manifest(client, repo, "encoded", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    _assert_absent(client, repo, "encoded", sha256(body))


@pytest.mark.parametrize(
    "value",
    ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 30, '"\\ud800"'],
    ids=["nan", "inf", "-inf", "1e400", "int-beyond-64-bits", "surrogate"],
)
def test_what_python_reads_beyond_json_is_refused(client: httpx.Client, value: str) -> None:
    """Python's JSON reader takes NaN and Infinity; Go clients (and Distribution) refuse them, so such a manifest
    could be stored and never pulled. A lone surrogate is no Unicode text: no UTF-8 encodes it."""
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    body = manifest.body.replace(b"{", b'{"x": ' + value.encode() + b",", 1)
    assert_error(put_manifest(client, repo, "odd", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    _assert_absent(client, repo, "odd", sha256(body))


@pytest.mark.parametrize(
    "platform",
    ["linux", ["linux", "amd64"], {"os": "linux", "architecture": 5}, {"os": "linux", "os.features": "x"}],
    ids=["string", "list", "architecture-number", "features-string"],
)
def test_an_index_entry_platform_must_be_an_object_of_strings(client: httpx.Client, platform: object) -> None:
    """A list whose entry's platform is no object was taken; a GET by tag from a client that accepts no lists then
    answered 500 (the linux/amd64 fallback read it as one), as did v1's tag listing."""
    repo = unique_repo()
    child = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    push(client, repo, child)
    document = json.loads(index_manifest([child], DOCKER_LIST).body)
    document["manifests"][0]["platform"] = platform
    body = canonical(document)
    assert_error(put_manifest(client, repo, "odd", body, DOCKER_LIST), 400, "MANIFEST_INVALID")
    _assert_absent(client, repo, "odd")


def test_media_type_differs_from_content_type(client: httpx.Client) -> None:
    repo = unique_repo()
    oci = image_manifest(client, repo)
    docker = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    assert_error(put_manifest(client, repo, "mixed1", oci.body, DOCKER_MANIFEST), 400, "MANIFEST_INVALID")
    assert_error(put_manifest(client, repo, "mixed2", docker.body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    _assert_absent(client, repo, "mixed1", "mixed2", oci.digest, docker.digest)


def test_missing_layer_or_config_blob(client: httpx.Client) -> None:
    repo = unique_repo()
    for media_type in (OCI_MANIFEST, DOCKER_MANIFEST):
        unpushed = image_manifest(client, repo, media_type=media_type, push_blobs=False)
        response = put_manifest(client, repo, "incomplete", unpushed.body, media_type)
        assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")

        complete = image_manifest(client, repo, media_type=media_type)
        document = json.loads(complete.body)
        document["config"]["digest"] = sha256(b"missing config")
        body = canonical(document)
        assert_error(put_manifest(client, repo, "no-config", body, media_type), 400, "MANIFEST_BLOB_UNKNOWN")
    _assert_absent(client, repo, "incomplete", "no-config")


FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def _with_layer(client: httpx.Client, repo: str, layer: dict[str, object]) -> bytes:
    """A Docker image manifest (its config pushed) whose one layer is `layer`."""
    complete = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    document = json.loads(complete.body)
    document["layers"] = [layer]
    return canonical(document)


@xfail_on_distribution("2.8 takes a manifest naming an absent layer that has urls")
def test_urls_on_an_ordinary_layer_do_not_excuse_its_absence(client: httpx.Client) -> None:
    """Only a foreign layer's type is fetched from its `urls`: any other layer with `urls` is pulled from here,
    so the repository must have it (before, any `urls` made a layer foreign, and the manifest named what the
    repository did not hold)."""
    repo = unique_repo()
    missing = {"mediaType": DOCKER_LAYER, "size": 5, "digest": sha256(b"never"), "urls": ["https://x.invalid/l"]}
    response = put_manifest(client, repo, "hinted", _with_layer(client, repo, missing), DOCKER_MANIFEST)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    _assert_absent(client, repo, "hinted")


@xfail_on_distribution("2.8 answers 500 to a foreign layer's manifest unless validation.manifests.urls is set")
def test_a_foreign_layer_is_taken_from_its_urls(client: httpx.Client) -> None:
    """A Windows base layer: not in the registry, fetched by clients from its http(s) URLs; other URLs are refused
    (Distribution's rule), as is a foreign layer given no URL and not in the repository."""
    repo = unique_repo()
    layer = {"mediaType": FOREIGN_LAYER, "size": 5, "digest": sha256(b"far away")}
    body = _with_layer(client, repo, {**layer, "urls": ["https://example.invalid/layer.tar.gz"]})
    assert put_manifest(client, repo, "foreign", body, DOCKER_MANIFEST).status_code == 201
    for bad in ("not a url", "ftp://example.invalid/layer", "https://example.invalid/layer#part"):
        body = _with_layer(client, repo, {**layer, "urls": [bad]})
        assert_error(put_manifest(client, repo, "bad-url", body, DOCKER_MANIFEST), 400, "MANIFEST_INVALID")
    response = put_manifest(client, repo, "no-url", _with_layer(client, repo, layer), DOCKER_MANIFEST)
    assert response.status_code == 400
    _assert_absent(client, repo, "bad-url", "no-url")


@xfail_on_distribution("2.8 answers 500 to a layer's urls unless validation.manifests.urls is set")
def test_an_oci_layer_with_urls_is_taken_from_them_as_in_distribution(client: httpx.Client) -> None:
    """Distribution's OCI handler takes a `tar`/`tar+gzip` layer (or a non-distributable one) that gives http(s)
    URLs without the blob; a layer of another type, or URLs of another scheme, are not."""
    repo = unique_repo()
    complete = image_manifest(client, repo, media_type=OCI_MANIFEST)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 5, "digest": sha256(b"elsewhere")}

    def with_layer(descriptor: dict[str, object]) -> bytes:
        document = json.loads(complete.body)
        document["layers"] = [descriptor]
        return canonical(document)

    hosted = with_layer({**layer, "urls": ["https://example.invalid/layer.tar.gz"]})
    assert put_manifest(client, repo, "hosted", hosted, OCI_MANIFEST).status_code == 201
    not_url = with_layer({**layer, "urls": ["not a url"]})
    assert_error(put_manifest(client, repo, "bad", not_url, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    other_type = with_layer({**layer, "mediaType": "application/vnd.example.data", "urls": ["https://x.invalid/d"]})
    assert_error(put_manifest(client, repo, "typed", other_type, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_from_another_repository_is_not_enough(client: httpx.Client) -> None:
    repo, other = unique_repo(), unique_repo()
    elsewhere = image_manifest(client, other)
    response = put_manifest(client, repo, "borrowed", elsewhere.body, elsewhere.media_type)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


@xfail_on_distribution("answers MANIFEST_BLOB_UNKNOWN; this registry answers MANIFEST_UNKNOWN as the issue asks")
def test_index_with_missing_child(client: httpx.Client) -> None:
    repo = unique_repo()
    present = image_manifest(client, repo)
    push(client, repo, present)
    missing = image_manifest(client, repo)  # blobs pushed, manifest not
    index = index_manifest([present, missing], OCI_INDEX)
    assert_error(put_manifest(client, repo, "partial", index.body, OCI_INDEX), 400, "MANIFEST_UNKNOWN")
    docker_list = index_manifest([present, missing], DOCKER_LIST)
    assert_error(put_manifest(client, repo, "partial", docker_list.body, DOCKER_LIST), 400, "MANIFEST_UNKNOWN")
    _assert_absent(client, repo, "partial", index.digest, docker_list.digest)


def test_digest_in_url_must_match_body(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    wrong = sha256(b"another manifest")
    assert_error(put_manifest(client, repo, wrong, manifest.body, manifest.media_type), 400, "DIGEST_INVALID")
    _assert_absent(client, repo, wrong, manifest.digest)


def test_manifest_just_under_4_mib_is_accepted(client: httpx.Client) -> None:
    """The spec: clients and registries SHOULD expect manifests of at least 4 MB to be pushable."""
    repo = unique_repo()
    small = image_manifest(client, repo)
    padding = 4 * 1000 * 1000 - len(small.body) - 100
    manifest = image_manifest(client, repo, annotations={"padding": "x" * padding})
    assert len(manifest.body) < 4 * 1000 * 1000
    push(client, repo, manifest, "big")
    assert get_manifest(client, repo, "big").content == manifest.body


def test_manifest_over_4_mib_is_refused(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo, annotations={"padding": "x" * (4 * 1024 * 1024 + 10)})
    response = put_manifest(client, repo, "huge", manifest.body, manifest.media_type)
    if response.status_code == 413:
        assert_error(response, 413, "MANIFEST_INVALID", "SIZE_INVALID")
    else:
        assert_error(response, 400, "MANIFEST_INVALID", "SIZE_INVALID")
    _assert_absent(client, repo, "huge")


@xfail_on_distribution("does not implement OCI v1.1 subject (no OCI-Subject header)")
def test_put_with_subject_answers_oci_subject(client: httpx.Client) -> None:
    repo = unique_repo()
    image = image_manifest(client, repo)
    push(client, repo, image, "app")
    artifact = image_manifest(client, repo, artifact_type="application/vnd.example.sig", subject=image)
    response = push(client, repo, artifact)
    assert response.headers["OCI-Subject"] == image.digest


def test_subject_may_not_exist_yet(client: httpx.Client) -> None:
    """Spec v1.1: a manifest whose subject is not (yet) in the registry must still be accepted."""
    repo = unique_repo()
    ghost = Pushed(b'{"ghost": true}', OCI_MANIFEST, sha256(b'{"ghost": true}'))
    artifact = image_manifest(client, repo, artifact_type="application/vnd.example.sig", subject=ghost)
    push(client, repo, artifact)
    assert get_manifest(client, repo, artifact.digest).content == artifact.body


def test_oci_manifest_without_media_type_field(client: httpx.Client) -> None:
    """`mediaType` is optional in an OCI manifest: the Content-Type of the push decides, and is served back."""
    repo = unique_repo()
    document = json.loads(image_manifest(client, repo).body)
    del document["mediaType"]
    body = canonical(document)
    response = put_manifest(client, repo, "bare", body, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    got = get_manifest(client, repo, "bare")
    assert got.content == body
    assert got.headers["Content-Type"] == OCI_MANIFEST


@pytest.mark.parametrize("media_type", [DOCKER_MANIFEST, DOCKER_LIST])
def test_docker_manifest_without_media_type_field_is_refused(client: httpx.Client, media_type: str) -> None:
    """Docker's schema 2 requires `mediaType`; the same bytes without it could otherwise be pushed as OCI too,
    and a digest keeps the type it was first pushed with."""
    repo = unique_repo()
    child = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    push(client, repo, child)
    document = json.loads(child.body if media_type == DOCKER_MANIFEST else index_manifest([child], DOCKER_LIST).body)
    del document["mediaType"]
    assert_error(put_manifest(client, repo, "bare", canonical(document), media_type), 400, "MANIFEST_INVALID")


def test_manifest_is_scoped_to_its_repository(client: httpx.Client) -> None:
    repo, other = unique_repo(), unique_repo()
    manifest = image_manifest(client, repo)
    push(client, repo, manifest, "mine")
    push(client, other, image_manifest(client, other), "theirs")
    assert_error(get_manifest(client, other, manifest.digest), 404, "MANIFEST_UNKNOWN")
    assert get_manifest(client, other, manifest.digest, "HEAD").status_code == 404


def test_tag_deleted_then_pushed_again(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    push(client, repo, manifest, "again")
    assert client.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
    assert get_manifest(client, repo, "again").status_code == 404
    push(client, repo, manifest, "again")
    assert get_manifest(client, repo, "again").content == manifest.body
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["again"]


@pytest.mark.parametrize(
    ("index_type", "layer_type"),
    [(OCI_INDEX, "application/vnd.oci.image.layer.v1.tar+gzip"), (DOCKER_LIST, DOCKER_LAYER)],
)
def test_buildkit_cache_index_of_blobs(client: httpx.Client, index_type: str, layer_type: str) -> None:
    """`docker buildx build --cache-to type=registry` (BuildKit before v0.21, or `image-manifest=false` since) pushes
    an index whose entries are its cache layers and config, blobs rather than manifests: Distribution, Docker Hub
    and GHCR take it, and BuildKit reads them back by digest. Such an entry must be in the repository like a layer,
    with its size."""
    repo = unique_repo()
    layers = [b"cache layer one" * 20, b"cache layer two" * 30]
    cache_config = b'{"layers":[],"records":[]}'
    entries = [{"mediaType": layer_type, "digest": sha256(layer), "size": len(layer)} for layer in layers]
    entries.append({"mediaType": BUILDKIT_CACHE_CONFIG, "digest": sha256(cache_config), "size": len(cache_config)})
    index = canonical({"schemaVersion": 2, "mediaType": index_type, "manifests": entries})

    assert_error(put_manifest(client, repo, "cache", index, index_type), 400, "MANIFEST_BLOB_UNKNOWN")
    for blob in [*layers, cache_config]:
        push_blob(client, repo, blob)
    answer = put_manifest(client, repo, "cache", index, index_type)
    assert answer.status_code == 201, answer.text
    got = get_manifest(client, repo, "cache")
    assert got.content == index
    assert got.headers["Content-Type"] == index_type
    for blob in [*layers, cache_config]:
        assert client.get(f"/v2/{repo}/blobs/{sha256(blob)}").content == blob


@xfail_on_distribution("does not check the sizes an index gives its entries")
def test_a_blob_entry_of_an_index_must_give_the_blobs_size(client: httpx.Client) -> None:
    repo = unique_repo()
    layer = b"cache layer" * 10
    push_blob(client, repo, layer)
    entry = {"mediaType": DOCKER_LAYER, "digest": sha256(layer), "size": len(layer) + 1}
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    assert_error(put_manifest(client, repo, "cache", index, OCI_INDEX), 400, "MANIFEST_INVALID")


def test_index_may_reference_manifests_of_both_families(client: httpx.Client) -> None:
    repo = unique_repo()
    children = [image_manifest(client, repo), image_manifest(client, repo, media_type=DOCKER_MANIFEST)]
    for child in children:
        push(client, repo, child)
    index = index_manifest(children, OCI_INDEX)
    push(client, repo, index, "multi")
    got = get_manifest(client, repo, "multi")
    assert got.content == index.body
    assert got.headers["Content-Type"] == OCI_INDEX


@xfail_on_distribution("2.8 predates OCI v1.1: ignores ?tag= on a manifest PUT")
def test_put_by_digest_with_tag_parameters_points_every_tag_at_it(client: httpx.Client) -> None:
    """OCI v1.1: `PUT /v2/<name>/manifests/<digest>?tag=a&tag=b` stores the manifest and points both tags at it in
    the same request, answering one `OCI-Tag` header per tag."""
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    previous = image_manifest(client, repo)
    push(client, repo, previous, "b")  # an existing tag is moved as a push by tag would move it
    response = client.put(
        f"/v2/{repo}/manifests/{manifest.digest}",
        params=[("tag", "a"), ("tag", "b")],
        content=manifest.body,
        headers={"Content-Type": manifest.media_type},
    )
    assert response.status_code == 201, response.text
    assert response.headers.get_list("OCI-Tag") == ["a", "b"]
    assert response.headers["Docker-Content-Digest"] == manifest.digest
    assert response.headers["Location"].endswith(f"/v2/{repo}/manifests/{manifest.digest}")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b"]
    for tag in ("a", "b"):
        got = get_manifest(client, repo, tag)
        assert got.content == manifest.body
        assert got.headers["Docker-Content-Digest"] == manifest.digest
    assert get_manifest(client, repo, previous.digest).content == previous.body


@xfail_on_distribution("2.8 predates OCI v1.1: ignores ?tag= on a manifest PUT")
@pytest.mark.parametrize("bad", [".dot", "-dash", "a" * 129, "sp ace"])
def test_invalid_tag_parameter_stores_nothing(client: httpx.Client, bad: str) -> None:
    repo = unique_repo()
    manifest = image_manifest(client, repo)
    response = client.put(
        f"/v2/{repo}/manifests/{manifest.digest}",
        params=[("tag", "good"), ("tag", bad)],
        content=manifest.body,
        headers={"Content-Type": manifest.media_type},
    )
    assert response.status_code == 400, response.text
    assert error_codes(response) == ["TAG_INVALID"]
    assert "OCI-Tag" not in response.headers
    assert_error(get_manifest(client, repo, manifest.digest), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, "good"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json().get("tags") in (None, [])
