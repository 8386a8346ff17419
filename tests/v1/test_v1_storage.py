"""v1 layers on drivers other than the filesystem: redirected to the driver's URL as the original redirected them
(the example driver), or streamed through the registry (the in-memory driver; ranges and the file listing too)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from prerequisites import EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL, require_module
from registry_api import unique_repo
from registry_process import RegistryProcess, implementation
from v1_engine import chain, expect, push

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the v1 API and the example driver are ours")


REDIRECT_BASE = "http://127.0.0.1:9/objects"
"""Never fetched: the tests only read where the registry sends its clients."""


def _example_storage(root: Path, **extra: object) -> dict[str, object]:
    return {"example": {"rootdirectory": str(root), "redirect_base": REDIRECT_BASE}, **extra}


def _blob_url(digest: str) -> str:
    hexdigest = digest.split(":", 1)[1]
    return f"{REDIRECT_BASE}/{quote(f'blobs/sha256/{hexdigest[:2]}/{hexdigest}/data')}"


@pytest.fixture(autouse=True)
def _example_driver() -> None:
    require_module(EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL)


def test_layer_redirected_to_the_driver_url(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    server = make_registry(storage=_example_storage(tmp_path / "objects"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        images = chain({"f": b"redirected"})
        push(client, f"team/{unique_repo()}", images)
        answer = expect(client.get(f"/v1/images/{images[0].id}/layer"), 302)
        digest = "sha256:" + hashlib.sha256(images[0].layer).hexdigest()
        assert answer.headers["Location"] == _blob_url(digest)


def test_layer_streamed_from_a_driver_without_local_files(make_registry: Callable[..., RegistryProcess]) -> None:
    """The in-memory driver has no file to sendfile: layers, ranges and listings stream through the registry."""
    server = make_registry(workers=1, storage={"inmemory": {}, "delete": {"enabled": True}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        images = chain({"etc/f": b"streamed" * 20000})
        push(client, f"team/{unique_repo()}", images)
        layer = images[0].layer
        assert expect(client.get(f"/v1/images/{images[0].id}/layer"), 200).content == layer
        tail = expect(client.get(f"/v1/images/{images[0].id}/layer", headers={"Range": "bytes=100-"}), 206)
        assert tail.content == layer[100:]
        assert tail.headers["Content-Range"] == f"bytes 100-{len(layer) - 1}/{len(layer)}"
        listing = expect(client.get(f"/v1/images/{images[0].id}/files"), 200).json()
        assert [entry[0] for entry in listing] == ["/etc", "/etc/f"]
