"""Reading back over the registry's HTTP API what a client pushed, to check it independently of the client."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from e2e_images import Image, OciLayout
from oci_content import MANIFEST_ACCEPT, sha256


@dataclass(frozen=True)
class Manifest:
    body: bytes
    digest: str
    media_type: str

    def json(self) -> dict:
        return json.loads(self.body)


def get_manifest(client: httpx.Client, repo: str, reference: str) -> Manifest:
    """GET a manifest accepting every image type; the served bytes must hash to the announced digest."""
    response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
    assert response.status_code == 200, f"GET {repo}:{reference} -> {response.status_code} {response.text}"
    digest = response.headers["Docker-Content-Digest"]
    assert sha256(response.content) == digest
    return Manifest(response.content, digest, response.headers["Content-Type"].split(";")[0].strip())


def assert_platforms_served(
    client: httpx.Client, repo: str, served: Manifest, layout: OciLayout, images: list[Image]
) -> None:
    """An index read back: one child per image's platform, and each child manifest and layer byte for byte as in
    the layout."""
    platforms = {m["platform"]["architecture"]: m["digest"] for m in served.json()["manifests"]}
    assert platforms == {image.architecture: image.manifest.digest for image in images}
    for image in images:
        assert get_manifest(client, repo, image.manifest.digest).body == layout.read_blob(image.manifest.digest)
        for layer in image.layers:
            assert get_blob(client, repo, layer.digest) == layout.read_blob(layer.digest)


def get_blob(client: httpx.Client, repo: str, digest: str) -> bytes:
    response = client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
    assert response.status_code == 200, f"GET blob {repo}@{digest} -> {response.status_code}"
    return response.content
