"""The v1 tables and queries on PostgreSQL: a push and pull, the one tag namespace, search (LIKE with its escape),
deletion."""

from __future__ import annotations

import httpx
from test_postgres_store import pg, pg_registry  # noqa: F401  (the PostgreSQL fixtures)
from test_v1_presented import push_v2_image

from registry_api import MANIFEST_ACCEPT, unique_repo
from v1_engine import chain, expect, pull, push

EXTRAS = {"star_count": 0, "is_official": False, "is_automated": False}


def test_v1_on_postgresql(pg: httpx.Client) -> None:  # noqa: F811
    name = f"pg/{unique_repo()}"
    images = chain({"a": b"postgres"}, {"b": b"second"})
    push(pg, name, images)
    assert [layer for _, layer in pull(pg, name)] == [i.layer for i in reversed(images)]
    expect(pg.get(f"/v2/{name}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT}), 200)
    found = expect(pg.get("/v1/search", params={"q": name.split("/")[1]}), 200).json()
    assert found["results"] == [{"name": name, "description": "", **EXTRAS}]
    # case-insensitive, as on SQLite and in the original (PostgreSQL's LIKE is not)
    shouted = expect(pg.get("/v1/search", params={"q": name.split("/")[1].upper()}), 200).json()
    assert shouted["results"] == found["results"]
    assert expect(pg.get("/v1/search", params={"q": "_%"}), 200).json()["num_results"] == 0
    # PostgreSQL refuses a text holding NUL: a search for one matches nothing, a description with one is refused
    assert expect(pg.get("/v1/search", params={"q": "pg\x00"}), 200).json()["num_results"] == 0
    nul = {"access": "public", "description": "a\x00b"}
    assert "description" in expect(pg.put(f"/v1/repositories/{name}/properties", json=nul), 400).json()["error"]
    expect(pg.put(f"/v1/repositories/{name}/properties", json={"access": "private"}), 200)
    expect(pg.delete(f"/v1/repositories/{name}/tags/latest"), 200)
    assert expect(pg.get(f"/v1/repositories/{name}/tags"), 200).json() == {}


def test_v2_image_seen_through_v1_on_postgresql(pg: httpx.Client) -> None:  # noqa: F811
    name = f"pg/{unique_repo()}"
    images = chain({"a": b"v2 on postgres"})
    push_v2_image(pg, name, "latest", images)
    for _ in range(2):  # presented once, then read back
        assert [layer for _, layer in pull(pg, name)] == [i.layer for i in reversed(images)]
