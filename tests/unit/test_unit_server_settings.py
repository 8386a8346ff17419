"""Settings the v2 handlers honour, checked over HTTP against a real server: extra headers, manifest size limit.

Kept with the server's own tests (not the shared API suite) because these keys are ours or differ from
CNCF Distribution's defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from registry_api import assert_error, image_manifest, push, put_manifest, unique_repo
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="settings of docker-registry 3 only")


def test_extra_headers_and_manifest_limit(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(
        workers=1,
        extra_config={
            "http": {
                "headers": {
                    "X-Content-Type-Options": ["nosniff"],
                    "X-Team": ["a", "b"],
                    "Docker-Distribution-API-Version": ["registry/2.0 (test)"],
                }
            },
            "validation": {"manifests": {"maxbytes": 2048}},
        },
    )
    repo = unique_repo("settings")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for response in (client.get("/v2/"), client.get(f"/v2/{repo}/tags/list"), client.get("/nowhere")):
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers.get_list("X-Team") == ["a", "b"]
            assert response.headers.get_list("Docker-Distribution-API-Version") == ["registry/2.0 (test)"]

        small = image_manifest(client, repo)
        assert push(client, repo, small, "small").status_code == 201
        large = image_manifest(client, repo, annotations={"padding": "x" * 4096})
        response = put_manifest(client, repo, "large", large.body, large.media_type)
        assert_error(response, 413, "MANIFEST_INVALID", "SIZE_INVALID")
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["small"]


def test_server_header_names_no_versions_and_can_be_replaced(make_registry: Callable[..., RegistryProcess]) -> None:
    plain = make_registry(workers=1)
    with httpx.Client(base_url=plain.url, timeout=30) as client:
        for response in (client.get("/v2/"), client.get("/v2/nothing/tags/list"), client.head("/v2/")):
            assert response.headers.get_list("Server") == ["docker-registry"]
    custom = make_registry(workers=1, extra_config={"http": {"headers": {"Server": ["registry.example"]}}})
    with httpx.Client(base_url=custom.url, timeout=30) as client:
        for response in (client.get("/v2/"), client.get("/nowhere")):
            assert response.headers.get_list("Server") == ["registry.example"]
