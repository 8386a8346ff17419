"""Requests the registry makes itself to URLs an operator configured (notification endpoints, `health.http`
checks): their credentials stay out of the log, and they are sent as Distribution's Go client sends them."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from yarl import URL


def request_url(url: str, header_names: Iterable[str]) -> URL:
    """`url` as it is requested: without the credentials of its user part when an `Authorization` header is
    configured too. Go's client then sends the header (the URL's credentials only stand in for a missing one);
    aiohttp refuses the request ("Cannot combine AUTHORIZATION header with ... credentials encoded in URL")."""
    parsed = URL(url)
    if parsed.user is not None and any(name.lower() == "authorization" for name in header_names):
        return parsed.with_user(None)
    return parsed


def client_error_text(error: BaseException) -> str:
    """What went wrong with a request, for the log, without its URL: aiohttp's errors about an answer (a redirect
    loop, a redirect to a bad location) name the URL with its query, which can hold the endpoint's token."""
    if isinstance(error, aiohttp.TooManyRedirects):
        last = error.history[-1].status if error.history else error.status
        return f"too many redirects (the last answered {last})"
    if isinstance(error, aiohttp.InvalidURL):  # a redirect to a location that is no URL, or not HTTP
        return f"{type(error).__name__}: {getattr(error, 'description', None) or 'invalid URL'}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__}: {error.status} {error.message}".rstrip()
    return str(error) or type(error).__name__
