"""A push as skopeo sends it: every request on a new connection, so with several workers each request may land on
any of them. The HEADs before a layer (two per layer) may land on one worker and the PUT that finishes it on
another, which did not see the PATCH that wrote it; afterwards every worker must serve the blob at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from registry_api import random_bytes, sha256, start_upload, unique_repo, with_params
from registry_process import RegistryProcess

OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def fresh(make_registry: Callable[..., RegistryProcess]) -> Iterator[Callable[[], httpx.Client]]:
    """A client per request, each on its own connection: the kernel spreads them over the 2 workers."""
    server = make_registry(workers=2)
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        c = httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        clients.append(c)
        return c

    yield client
    for c in clients:
        c.close()


def test_layers_pushed_as_skopeo_does_are_served_by_every_worker_at_once(fresh: Callable[[], httpx.Client]) -> None:
    repo = unique_repo("spread")
    for _ in range(24):
        data = random_bytes(20_000)
        digest = sha256(data)
        for _ in range(2):  # skopeo HEADs each layer twice before pushing it: the answer may be cached
            assert fresh().head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        location = start_upload(fresh(), repo)
        patched = fresh().patch(location, content=data, headers={**OCTETS, "Content-Range": f"0-{len(data) - 1}"})
        assert patched.status_code == 202, patched.text
        put = fresh().put(with_params(patched.headers["Location"], digest=digest))
        assert put.status_code == 201, put.text
        for _ in range(4):  # on either worker, including one that answered 404 just before
            head = fresh().head(f"/v2/{repo}/blobs/{digest}")
            assert head.status_code == 200, "a worker still says the pushed layer is missing"
            assert head.headers["Content-Length"] == str(len(data))
        assert fresh().get(f"/v2/{repo}/blobs/{digest}").content == data


def test_a_put_on_another_worker_with_the_wrong_digest_publishes_nothing(fresh: Callable[[], httpx.Client]) -> None:
    repo = unique_repo("spread")
    for _ in range(8):
        data = random_bytes(20_000)
        location = start_upload(fresh(), repo)
        patched = fresh().patch(location, content=data, headers=OCTETS)
        assert patched.status_code == 202, patched.text
        wrong = sha256(data + b"!")
        put = fresh().put(with_params(patched.headers["Location"], digest=wrong))
        assert put.status_code == 400
        assert put.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert fresh().head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
        assert fresh().head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
