"""Content negotiation of manifest pulls: a tag's manifest is served only in a type the client's Accept lists."""

from __future__ import annotations

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
    image_manifest,
    index_manifest,
    push,
    sha256,
    unique_repo,
    xfail_on_distribution,
)
from registry_process import implementation


@pytest.fixture
def tagged_index(client: httpx.Client) -> tuple[str, Pushed]:
    repo = unique_repo("accept")
    child = image_manifest(client, repo)
    push(client, repo, child)
    index = index_manifest([child])
    push(client, repo, index, "multi")
    return repo, index


def _get(client: httpx.Client, repo: str, reference: str, accept: list[str], method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/manifests/{reference}", headers=[("Accept", a) for a in accept])


@pytest.mark.parametrize(
    "accept",
    [
        [DOCKER_MANIFEST],
        [DOCKER_MANIFEST, DOCKER_LIST],
        [f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9"],
        pytest.param([f"{DOCKER_MANIFEST}, {OCI_INDEX};q=0"], marks=xfail_on_distribution("ignores q=0")),
    ],
)
def test_index_is_not_served_to_a_client_that_cannot_read_it(
    client: httpx.Client, tagged_index: tuple[str, Pushed], accept: list[str]
) -> None:
    repo, _ = tagged_index
    for method in ("GET", "HEAD"):
        response = _get(client, repo, "multi", accept, method)
        assert response.status_code == 404, (accept, method, response.status_code)
    response = _get(client, repo, "multi", accept)
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert "accept header does not support" in response.text


@pytest.mark.parametrize(
    "accept",
    [
        [OCI_INDEX],
        [DOCKER_MANIFEST, OCI_INDEX],
        [f"{DOCKER_MANIFEST};q=1, {OCI_INDEX};q=0.5"],
        pytest.param([f"{DOCKER_MANIFEST}, */*"], marks=xfail_on_distribution("ignores */*")),
        pytest.param([OCI_INDEX.upper()], marks=xfail_on_distribution("compares media types case-sensitively")),
    ],
)
def test_index_is_served_when_accept_lists_it(
    client: httpx.Client, tagged_index: tuple[str, Pushed], accept: list[str]
) -> None:
    repo, index = tagged_index
    response = _get(client, repo, "multi", accept)
    assert response.status_code == 200, response.text
    assert response.content == index.body
    assert response.headers["Content-Type"] == OCI_INDEX


def test_by_digest_too_accept_decides(client: httpx.Client, tagged_index: tuple[str, Pushed]) -> None:
    repo, index = tagged_index
    assert_error(_get(client, repo, index.digest, [DOCKER_MANIFEST]), 404, "MANIFEST_UNKNOWN")
    assert _get(client, repo, index.digest, [OCI_INDEX]).content == index.body


@xfail_on_distribution("without Accept serves no OCI manifest by tag")
def test_without_accept_the_manifest_is_served(client: httpx.Client, tagged_index: tuple[str, Pushed]) -> None:
    repo, index = tagged_index
    response = _get(client, repo, "multi", [])
    assert response.status_code == 200
    assert response.content == index.body


@xfail_on_distribution("rewrites the manifest to schema1 instead")
def test_docker_image_is_refused_to_an_oci_only_client(client: httpx.Client) -> None:
    repo = unique_repo("accept")
    manifest = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    push(client, repo, manifest, "docker")
    assert_error(_get(client, repo, "docker", [OCI_MANIFEST, OCI_INDEX]), 404, "MANIFEST_UNKNOWN")
    assert _get(client, repo, "docker", [DOCKER_MANIFEST]).content == manifest.body


def test_a_docker_list_by_tag_is_its_linux_amd64_image_to_a_client_that_cannot_read_lists(client: httpx.Client) -> None:
    """What CNCF Distribution does for Docker engines that predate manifest lists and minimal clients listing only
    schema 2: a tag naming a list is served as the list's linux/amd64 image (its own digest and type); by digest,
    or when the list has no such image, the client gets the usual 404."""
    repo = unique_repo("accept")
    images = [image_manifest(client, repo, media_type=DOCKER_MANIFEST) for _ in range(2)]
    for image in images:
        push(client, repo, image)
    docker_list = index_manifest(images, media_type=DOCKER_LIST)  # amd64, then arm64
    push(client, repo, docker_list, "multi")
    if implementation() == "ours":  # Distribution serves a list by digest whatever Accept says, and answers 400
        assert_error(_get(client, repo, docker_list.digest, [DOCKER_MANIFEST]), 404, "MANIFEST_UNKNOWN")
        assert_error(_get(client, repo, "multi", [OCI_MANIFEST]), 404, "MANIFEST_UNKNOWN")  # no OCI image in it
    for method in ("GET", "HEAD"):
        response = _get(client, repo, "multi", [DOCKER_MANIFEST], method)
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == images[0].digest
        assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert _get(client, repo, "multi", [DOCKER_MANIFEST]).content == images[0].body
    assert _get(client, repo, "multi", [DOCKER_MANIFEST, DOCKER_LIST]).content == docker_list.body

    arm_only = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [images[1].as_descriptor(platform={"architecture": "arm64", "os": "linux"})],
    }
    body = canonical(arm_only)
    push(client, repo, Pushed(body, DOCKER_LIST, sha256(body)), "arm")
    assert_error(_get(client, repo, "arm", [DOCKER_MANIFEST]), 404, "MANIFEST_UNKNOWN")
