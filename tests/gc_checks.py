"""What a pull after garbage collection must find: a tag's manifest, its children and blobs, each verified."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import httpx

from registry_api import get_manifest
from registry_process import RegistryProcess

LEASE_WAIT_SECONDS = 60.0
"""How long `collect_beside_online_gc` tries again while another collection holds the lease."""


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


def collect_beside_online_gc(server: RegistryProcess, *args: str) -> dict[str, Any]:
    """The summary of `garbage-collect --json *args` with the server's configuration, run again while another
    collection (the server's online collector) holds the lease, as an operator would."""
    deadline = time.monotonic() + LEASE_WAIT_SECONDS
    command = [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(server.workdir / "config.yml")]
    while True:
        result = subprocess.run([*command, "--json", *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode == 0:
            summary: dict[str, Any] = json.loads(result.stdout)
            return summary
        assert result.returncode == 1, result.stderr
        assert "another garbage collection" in result.stderr
        assert time.monotonic() < deadline, "the lease never became free"
        time.sleep(0.2)
