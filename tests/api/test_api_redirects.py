"""Blob downloads redirected to the URL the storage driver offers (`content_redirect_url`), and the switch that
turns it off (`storage.redirect.disable`), with the example driver's `redirect_base` as the URL source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from prerequisites import EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL, require_module
from registry_api import push_blob, random_bytes, unique_repo
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the example driver plugs into our registry only")

REDIRECT_BASE = "http://127.0.0.1:9/objects"
"""Never fetched: the tests only read where the registry sends its clients (port 9 is discard, nothing listens)."""


@pytest.fixture(autouse=True)
def _example_driver() -> None:
    """The example driver is a separate distribution, not part of the `test` extra."""
    require_module(EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL)


def _example_storage(root: Path, **extra: object) -> dict[str, object]:
    return {"example": {"rootdirectory": str(root), "redirect_base": REDIRECT_BASE}, **extra}


def _blob_url(digest: str) -> str:
    """Where the example driver's objects are served: the blob's path in the storage layout, percent-encoded."""
    hexdigest = digest.split(":", 1)[1]
    return f"{REDIRECT_BASE}/{quote(f'blobs/sha256/{hexdigest[:2]}/{hexdigest}/data')}"


def test_blob_get_is_redirected_to_the_driver_url(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    server = make_registry(storage=_example_storage(tmp_path / "objects"))
    repo, data = unique_repo("redirect"), random_bytes(70_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, repo, data)

        got = client.get(f"/v2/{repo}/blobs/{digest}")
        assert got.status_code == 307, got.text
        assert got.headers["Location"] == _blob_url(digest)
        assert got.headers["Docker-Content-Digest"] == digest

        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(data))
        assert head.headers["Docker-Content-Digest"] == digest


def test_redirect_disabled_serves_the_bytes(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    server = make_registry(storage=_example_storage(tmp_path / "objects", redirect={"disable": True}))
    repo, data = unique_repo("redirect"), random_bytes(70_000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digest = push_blob(client, repo, data)
        got = client.get(f"/v2/{repo}/blobs/{digest}")
        assert got.status_code == 200, got.text
        assert got.content == data
        assert got.headers["Docker-Content-Digest"] == digest


def test_unknown_blob_is_not_redirected(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    server = make_registry(storage=_example_storage(tmp_path / "objects"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        missing = "sha256:" + "0" * 64
        got = client.get(f"/v2/{unique_repo('redirect')}/blobs/{missing}")
        assert got.status_code == 404
        assert "Location" not in got.headers
