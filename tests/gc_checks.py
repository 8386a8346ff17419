"""What a pull after garbage collection must find: a tag's manifest, its children and blobs, each verified."""

from __future__ import annotations

import hashlib
import json

import httpx

from registry_api import get_manifest


def pull_and_verify(client: httpx.Client, repo: str, tag: str) -> None:
    """Pull a tag completely: the manifest, every child and blob, each checked against its digest."""
    response = get_manifest(client, repo, tag)
    assert response.status_code == 200, (repo, tag, response.text)
    verify_manifest(client, repo, response.content)


def verify_manifest(client: httpx.Client, repo: str, body: bytes) -> None:
    document = json.loads(body)
    for child in document.get("manifests", []):
        response = get_manifest(client, repo, child["digest"])
        assert response.status_code == 200, (repo, child["digest"])
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == child["digest"]
        verify_manifest(client, repo, response.content)
    for blob in [document["config"], *document["layers"]] if "config" in document else []:
        response = client.get(f"/v2/{repo}/blobs/{blob['digest']}")
        assert response.status_code == 200, (repo, blob["digest"], response.status_code)
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == blob["digest"]
