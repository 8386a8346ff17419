"""Pagination of tag lists and the catalog: parameters, page cuts and the next-page Link."""

from __future__ import annotations

import pytest

from docker_registry.server.http.pagination import PageRequest, page_request, paginate
from docker_registry.server.registry.errors import PAGINATION_NUMBER_INVALID, RegistryError


def test_parameters() -> None:
    assert page_request({}) == PageRequest(None, None)
    assert page_request({"n": "", "last": ""}) == PageRequest(None, None)
    assert page_request({"n": "0", "last": "b"}) == PageRequest(0, "b")
    assert page_request({"n": "25"}) == PageRequest(25, None)
    assert page_request({"n": "0" * 30 + "25"}) == PageRequest(25, None)
    assert page_request({"n": "0" * 5000 + "7"}) == PageRequest(7, None)  # int() refuses more than 4,300 digits
    assert page_request({"n": "0" * 5000}) == PageRequest(0, None)
    assert page_request({"n": "9" * 40}).n == page_request({"n": "9" * 5000}).n >= 10**18  # beyond any list


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "1e3", " 1", "²", "٣", "1²"])
def test_invalid_n(n: str) -> None:
    with pytest.raises(RegistryError) as info:
        page_request({"n": n})
    assert info.value.error is PAGINATION_NUMBER_INVALID


def test_everything_fits() -> None:
    assert paginate(["a", "b"], None, "/v2/x/tags/list") == (["a", "b"], None)
    assert paginate(["a", "b"], 2, "/v2/x/tags/list") == (["a", "b"], None)


def test_more_remain() -> None:
    page, link = paginate(["a", "b", "c"], 2, "/v2/x/tags/list")
    assert page == ["a", "b"]
    assert link == '</v2/x/tags/list?n=2&last=b>; rel="next"'


def test_last_is_quoted_in_the_link() -> None:
    _, link = paginate(["a/b", "c"], 1, "/v2/_catalog")
    assert link == '</v2/_catalog?n=1&last=a%2Fb>; rel="next"'


def test_zero_is_an_empty_page() -> None:
    assert paginate(["a"], 0, "/v2/_catalog") == ([], None)
