"""Answers as the original registry gave them: JSON bodies (`true` when there is nothing to say), errors as
`{"error": "..."}`, and the headers every v1 response carried."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..registry.errors import RegistryError

REGISTRY_VERSION = "0.9.1"
"""The API of the original registry's last release, which this one serves."""
LEGACY_HEADERS = {"X-Docker-Registry-Version": REGISTRY_VERSION, "X-Docker-Registry-Config": "common"}
NO_CACHE = {"Cache-Control": "no-cache", "Expires": "-1"}
NO_CONTENT = 204


class V1Error(Exception):
    """A refusal in the original's shape: a status and a message."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}


def response(
    data: Any = True, status: int = 200, headers: dict[str, str] | None = None, *, raw: bytes | None = None
) -> web.Response:
    """`data` as JSON (keys sorted, as the original did), or `raw` bytes that are JSON already."""
    all_headers = {**LEGACY_HEADERS, **NO_CACHE, "Content-Type": "application/json", **(headers or {})}
    if status == NO_CONTENT:  # the original wrote `""` here; a 204 carries no body
        return web.Response(status=status, headers=all_headers)
    body = raw if raw is not None else json.dumps(data, sort_keys=True).encode()
    return web.Response(body=body, status=status, headers=all_headers)


def error(message: str, status: int = 400, headers: dict[str, str] | None = None) -> web.Response:
    return response({"error": message}, status, headers)


def from_registry_error(e: RegistryError) -> web.Response:
    """An error of the layers below (a bad name, a 416 range, a short body, a busy database) in the v1 shape; a
    detail given as text says more than the code's message (`UNSUPPORTED`: "the registry is in read-only mode")."""
    return error(e.detail if isinstance(e.detail, str) else e.message, e.status, e.headers)
