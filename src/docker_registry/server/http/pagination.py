"""Pagination of tag lists and the catalog: the `n` and `last` parameters and the `Link` to the next page.

Both lists are sorted by bytes; a page holds the first `n` entries after `last`, and a `Link: <...>; rel="next"`
header is given only when more remain, as the distribution-spec describes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from ..registry.errors import PAGINATION_NUMBER_INVALID, RegistryError

MAX_DIGITS = 18
"""Digits of `n` read as written; more is any page size beyond every list's length."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    n: int | None
    """Entries wanted; None means all (tags) or the server's default (catalog)."""
    last: str | None


def page_request(query: Mapping[str, str]) -> PageRequest:
    value = query.get("n")
    n = None
    if value:
        if not re.fullmatch(r"[0-9]+", value):  # not isdigit(): it accepts "²" and "٣"
            raise RegistryError(PAGINATION_NUMBER_INVALID, {"n": value[:40]})
        # a number too large for a page is all there is (and `int` refuses more than 4,300 digits)
        digits = value.lstrip("0") or "0"
        n = int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS
    return PageRequest(n, query.get("last") or None)


def paginate(entries: list[str], n: int | None, path: str) -> tuple[list[str], str | None]:
    """Cut `entries` (fetched with one more than `n` to see whether more remain) to a page and its next link."""
    if n is None or len(entries) <= n:
        return entries, None
    if n == 0:
        return [], None
    page = entries[:n]
    return page, f'<{path}?n={n}&last={quote(page[-1], safe="")}>; rel="next"'
