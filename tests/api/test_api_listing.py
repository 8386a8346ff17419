"""Tag lists and the catalog: lexical order, `n`/`last` paging and the `Link` header that drives it."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import httpx
import pytest

from registry_api import assert_error, image_manifest, push, unique_repo, xfail_on_distribution
from registry_process import RegistryProcess

# Lowercase only: byte order and the spec's case-insensitive lexical order then agree.
TAGS = sorted(["latest", "v1", "v1.0", "v1.0.1", "v10", "v2", "0", "9", "_a", "a-b", "a.b", "a_b", "zz", "1.2"])

LINK = re.compile(r'^<([^>]+)>;\s*rel="?next"?$')


def _next_link(response: httpx.Response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    match = LINK.match(link)
    assert match, f"malformed Link header: {link!r}"
    return match.group(1)


def _page_through(client: httpx.Client, url: str, key: str, page_size: int) -> list[str]:
    """Follow `Link` from the first page to the last, checking each page's size."""
    collected: list[str] = []
    next_url: str | None = f"{url}?n={page_size}"
    while next_url:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        page = response.json()[key] or []
        next_url = _next_link(response)
        if next_url:
            assert len(page) == page_size
        else:
            assert len(page) <= page_size
        collected.extend(page)
        assert len(collected) < 1000, "paging does not end"
    return collected


@pytest.fixture(scope="module")
def tagged(registry: RegistryProcess) -> str:
    repo = unique_repo("tags")
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        manifest = image_manifest(c, repo)
        for tag in random.sample(TAGS, len(TAGS)):
            push(c, repo, manifest, tag)
    return repo


@xfail_on_distribution("2.8 neither sorts tags nor pages them")
def test_tags_are_listed_in_lexical_order(client: httpx.Client, tagged: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"name": tagged, "tags": TAGS}
    assert "Link" not in response.headers


@xfail_on_distribution("2.8 neither sorts tags nor pages them")
@pytest.mark.parametrize("page_size", [1, 3, 5, len(TAGS)])
def test_tags_paging_with_link(client: httpx.Client, tagged: str, page_size: int) -> None:
    assert _page_through(client, f"/v2/{tagged}/tags/list", "tags", page_size) == TAGS


@xfail_on_distribution("2.8 neither sorts tags nor pages them")
def test_tags_last(client: httpx.Client, tagged: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list", params={"last": "v1.0", "n": 2})
    assert response.json()["tags"] == ["v1.0.1", "v10"]
    rest = client.get(f"/v2/{tagged}/tags/list", params={"last": "v1.0"})
    assert rest.json()["tags"] == TAGS[TAGS.index("v1.0") + 1 :]
    between = client.get(f"/v2/{tagged}/tags/list", params={"last": "v0"})  # not a tag: starts after it
    assert between.json()["tags"] == TAGS[TAGS.index("v1") :]
    end = client.get(f"/v2/{tagged}/tags/list", params={"last": "zz", "n": 5})
    assert end.status_code == 200
    assert end.json()["tags"] in ([], None)
    assert "Link" not in end.headers


@xfail_on_distribution("2.8 neither sorts tags nor pages them")
def test_tags_last_holding_nul(client: httpx.Client, tagged: str) -> None:
    """No tag holds NUL, so the list starts after `last` as for any other text (PostgreSQL refuses the NUL itself:
    it must not reach it and answer 500)."""
    response = client.get(f"/v2/{tagged}/tags/list", params={"last": "v1.0\x00x"})
    assert response.status_code == 200
    assert response.json()["tags"] == TAGS[TAGS.index("v1.0") + 1 :]


@xfail_on_distribution("2.8 neither sorts tags nor pages them")
def test_tags_n_larger_than_the_list(client: httpx.Client, tagged: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list", params={"n": 1000})
    assert response.json()["tags"] == TAGS
    assert "Link" not in response.headers


@pytest.mark.parametrize("n", ["99999999999999999999", "1" + "0" * 5000])
def test_tags_n_beyond_any_number_is_all(client: httpx.Client, tagged: str, n: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list", params={"n": n})
    assert response.status_code == 200
    assert sorted(response.json()["tags"]) == TAGS
    assert "Link" not in response.headers


@xfail_on_distribution("treats n=0 as no limit")
def test_tags_n_zero(client: httpx.Client, tagged: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list", params={"n": 0})
    assert response.status_code == 200
    assert response.json()["tags"] == []
    assert "Link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1e3", "²", "٣"])
def test_tags_bad_n_is_a_client_error(client: httpx.Client, tagged: str, n: str) -> None:
    response = client.get(f"/v2/{tagged}/tags/list", params={"n": n})
    assert response.status_code < 500
    if response.status_code == 200:
        assert sorted(response.json()["tags"]) == TAGS


def test_tags_of_unknown_repository(client: httpx.Client) -> None:
    assert_error(client.get(f"/v2/{unique_repo('nothing')}/tags/list"), 404, "NAME_UNKNOWN")


CATALOG = sorted(["alpha", "alpha/beta", "alpha/beta/gamma", "alpha/zeta", "b0", "library/ubuntu", "omega/x/y/z"])


@pytest.fixture(scope="module")
def catalog_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry of its own: the catalog of the shared one holds every other test's repositories."""
    server = RegistryProcess(tmp_path_factory.mktemp("catalog")).start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for name in random.sample(CATALOG, len(CATALOG)):
            push(c, name, image_manifest(c, name), "latest")
    yield server
    server.stop()


def test_catalog_lists_nested_names_in_lexical_order(catalog_registry: RegistryProcess) -> None:
    response = httpx.get(f"{catalog_registry.url}/v2/_catalog")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"repositories": CATALOG}


@pytest.mark.parametrize("page_size", [1, 2, 3, len(CATALOG)])
def test_catalog_paging_with_link(catalog_registry: RegistryProcess, page_size: int) -> None:
    with httpx.Client(base_url=catalog_registry.url) as c:
        assert _page_through(c, "/v2/_catalog", "repositories", page_size) == CATALOG


def test_catalog_last(catalog_registry: RegistryProcess) -> None:
    response = httpx.get(f"{catalog_registry.url}/v2/_catalog", params={"last": "alpha/beta", "n": 2})
    assert response.json()["repositories"] == ["alpha/beta/gamma", "alpha/zeta"]
    assert _next_link(response)


def test_catalog_last_holding_nul(catalog_registry: RegistryProcess) -> None:
    response = httpx.get(f"{catalog_registry.url}/v2/_catalog", params={"last": "alpha/beta\x00", "n": 2})
    assert response.status_code == 200
    assert response.json()["repositories"] == ["alpha/beta/gamma", "alpha/zeta"]


def test_catalog_n_zero(catalog_registry: RegistryProcess) -> None:
    response = httpx.get(f"{catalog_registry.url}/v2/_catalog", params={"n": 0})
    assert response.status_code == 200
    assert response.json()["repositories"] == []
    assert "Link" not in response.headers
