"""The OCI v1.1 referrers API: artifacts that name a subject are listed for it, filterable by artifactType."""

from __future__ import annotations

import json

import httpx
import pytest

from registry_api import (
    OCI_INDEX,
    Pushed,
    assert_error,
    canonical,
    image_manifest,
    push,
    sha256,
    unique_repo,
    xfail_on_distribution,
)

NO_REFERRERS_API = xfail_on_distribution("has no referrers API")

SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
CHART_CONFIG = "application/vnd.example.chart.config.v1+json"


def _referrers(client: httpx.Client, repo: str, digest: str, **params: str) -> httpx.Response:
    response = client.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == OCI_INDEX
    body = response.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return response


def _by_digest(response: httpx.Response) -> dict[str, dict]:
    return {entry["digest"]: entry for entry in response.json()["manifests"]}


def _referring_index(subject: Pushed, children: list[Pushed]) -> Pushed:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.as_descriptor() for child in children],
        "subject": subject.as_descriptor(),
        "annotations": {"org.example.bundle": "yes"},
    }
    body = canonical(document)
    return Pushed(body, OCI_INDEX, sha256(body), "application/vnd.example.bundle", {"org.example.bundle": "yes"})


@pytest.fixture
def graph(client: httpx.Client) -> tuple[str, Pushed, list[Pushed]]:
    """An image with an SBOM, two signatures, a chart-typed image, and an index, all naming it as subject."""
    repo = unique_repo("refs")
    image = image_manifest(client, repo)
    push(client, repo, image, "app")
    sbom = image_manifest(client, repo, artifact_type=SBOM, subject=image, annotations={"org.example.n": "sbom"})
    signatures = [
        image_manifest(client, repo, artifact_type=SIGNATURE, subject=image, annotations={"org.example.n": str(i)})
        for i in range(2)
    ]
    chart = image_manifest(client, repo, config_media_type=CHART_CONFIG, subject=image)
    for manifest in (sbom, *signatures, chart):
        push(client, repo, manifest)
    bundle = _referring_index(image, [sbom])
    push(client, repo, bundle)
    return repo, image, [sbom, *signatures, chart, bundle]


@NO_REFERRERS_API
def test_referrers_are_listed_with_their_descriptors(
    client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]
) -> None:
    repo, image, referrers = graph
    listed = _by_digest(_referrers(client, repo, image.digest))
    assert set(listed) == {r.digest for r in referrers}
    for referrer in referrers:
        entry = listed[referrer.digest]
        assert entry["mediaType"] == referrer.media_type
        assert entry["size"] == len(referrer.body)
        assert entry["artifactType"] == (referrer.artifact_type or CHART_CONFIG)
        if referrer.annotations:
            assert entry["annotations"] == referrer.annotations
        else:
            assert not entry.get("annotations")


@NO_REFERRERS_API
def test_artifact_type_filter(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    repo, image, referrers = graph
    response = _referrers(client, repo, image.digest, artifactType=SIGNATURE)
    assert response.headers["OCI-Filters-Applied"] == "artifactType"
    assert set(_by_digest(response)) == {r.digest for r in referrers if r.artifact_type == SIGNATURE}

    none = _referrers(client, repo, image.digest, artifactType="application/vnd.example.nothing")
    assert none.json()["manifests"] == []
    nul = _referrers(client, repo, image.digest, artifactType=SIGNATURE + "\x00")  # PostgreSQL refuses a NUL
    assert nul.status_code == 200
    assert nul.json()["manifests"] == []

    unfiltered = _referrers(client, repo, image.digest)
    assert "OCI-Filters-Applied" not in unfiltered.headers


@NO_REFERRERS_API
def test_referrers_of_a_referrer(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    repo, _image, referrers = graph
    sbom = referrers[0]
    signature = image_manifest(client, repo, artifact_type=SIGNATURE, subject=sbom)
    push(client, repo, signature)
    assert set(_by_digest(_referrers(client, repo, sbom.digest))) == {signature.digest}


@NO_REFERRERS_API
def test_digest_without_referrers_gives_an_empty_index(client: httpx.Client) -> None:
    repo = unique_repo("refs")
    image = image_manifest(client, repo)
    push(client, repo, image, "alone")
    assert _referrers(client, repo, image.digest).json()["manifests"] == []
    assert _referrers(client, repo, sha256(b"never pushed")).json()["manifests"] == []


@NO_REFERRERS_API
def test_referrers_are_per_repository(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    image = graph[1]
    other = unique_repo("refs")
    push(client, other, image_manifest(client, other), "x")
    assert _referrers(client, other, image.digest).json()["manifests"] == []


@NO_REFERRERS_API
def test_deleted_referrer_disappears(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    repo, image, referrers = graph
    gone = referrers[1]
    assert client.delete(f"/v2/{repo}/manifests/{gone.digest}").status_code == 202
    assert gone.digest not in _by_digest(_referrers(client, repo, image.digest))


@NO_REFERRERS_API
def test_referrer_pushed_before_its_subject(client: httpx.Client) -> None:
    repo = unique_repo("refs")
    image = image_manifest(client, repo)
    early = image_manifest(client, repo, artifact_type=SIGNATURE, subject=image)
    push(client, repo, early)
    assert set(_by_digest(_referrers(client, repo, image.digest))) == {early.digest}
    push(client, repo, image, "late")
    assert set(_by_digest(_referrers(client, repo, image.digest))) == {early.digest}


@NO_REFERRERS_API
@pytest.mark.parametrize("digest", ["sha256:xyz", "latest", "sha256:" + "0" * 63])
def test_invalid_digest(client: httpx.Client, digest: str) -> None:
    repo = unique_repo("refs")
    push(client, repo, image_manifest(client, repo), "x")
    response = client.get(f"/v2/{repo}/referrers/{digest}")
    assert_error(response, 400, "DIGEST_INVALID")


def test_subject_is_kept_in_the_manifest(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    repo, image, referrers = graph
    got = client.get(f"/v2/{repo}/manifests/{referrers[0].digest}", headers={"Accept": referrers[0].media_type})
    assert json.loads(got.content)["subject"]["digest"] == image.digest


def _pages(client: httpx.Client, url: str) -> list[httpx.Response]:
    """Every page of a referrers list, following each `Link: <...>; rel="next"`."""
    pages = [client.get(url)]
    while "Link" in pages[-1].headers:
        assert len(pages) < 20, "the pages never end"
        link = pages[-1].headers["Link"]
        assert link.startswith("</v2/"), link
        assert link.endswith('>; rel="next"'), link
        pages.append(client.get(link[1 : link.index(">")]))
    for page in pages:
        assert page.status_code == 200, page.text
    return pages


@NO_REFERRERS_API
def test_a_long_list_comes_in_pages(client: httpx.Client) -> None:
    """Referrers whose descriptors together exceed what a client reads of an index (their annotations are large)
    are listed on several pages, each well under 4 MiB, with the filter kept from page to page: every one once."""
    repo = unique_repo("refs")
    image = image_manifest(client, repo)
    push(client, repo, image, "big")
    large = {"org.example.notes": "n" * 700_000}
    sboms = [image_manifest(client, repo, artifact_type=SBOM, subject=image, annotations=large) for _ in range(5)]
    signature = image_manifest(client, repo, artifact_type=SIGNATURE, subject=image)
    for manifest in (*sboms, signature):
        push(client, repo, manifest)

    pages = _pages(client, f"/v2/{repo}/referrers/{image.digest}")
    assert len(pages) > 1
    assert all(len(page.content) < 4 * 1024 * 1024 for page in pages)
    listed = [entry["digest"] for page in pages for entry in page.json()["manifests"]]
    assert sorted(listed) == sorted(m.digest for m in (*sboms, signature))

    filtered = _pages(client, f"/v2/{repo}/referrers/{image.digest}?artifactType={SBOM.replace('+', '%2B')}")
    assert len(filtered) > 1
    assert all(page.headers["OCI-Filters-Applied"] == "artifactType" for page in filtered)
    assert sorted(e["digest"] for page in filtered for e in page.json()["manifests"]) == sorted(m.digest for m in sboms)


@NO_REFERRERS_API
def test_a_filter_written_with_a_plain_plus(client: httpx.Client, graph: tuple[str, Pushed, list[Pushed]]) -> None:
    """`?artifactType=application/vnd.example.sbom.v1+json` unencoded, as the spec's own example writes a filter:
    the `+` is the media type's, not a space."""
    repo, image, referrers = graph
    response = client.get(f"/v2/{repo}/referrers/{image.digest}?artifactType={SBOM}")
    assert response.status_code == 200
    assert set(_by_digest(response)) == {r.digest for r in referrers if r.artifact_type == SBOM}


@NO_REFERRERS_API
def test_an_empty_artifact_type_is_the_configs(client: httpx.Client) -> None:
    """The spec: "If the `artifactType` is empty or missing in the image manifest, the value of `artifactType`
    MUST be set to the config descriptor `mediaType` value"."""
    repo = unique_repo("refs")
    image = image_manifest(client, repo)
    push(client, repo, image, "x")
    document = json.loads(image_manifest(client, repo, config_media_type=CHART_CONFIG).body)
    document.update(artifactType="", subject=image.as_descriptor())
    body = canonical(document)
    push(client, repo, Pushed(body, document["mediaType"], sha256(body)))
    listed = _by_digest(_referrers(client, repo, image.digest))
    assert listed[sha256(body)]["artifactType"] == CHART_CONFIG
