"""The `Range` header of blob GETs (RFC 9110 14.2): one byte range served as 206, anything else handled safely.

A single satisfiable range is served; one starting past the end (or a zero-length suffix) is 416 with
`Content-Range: bytes */<size>`. Several ranges, another unit or a malformed value are ignored, and the whole blob
is served, as RFC 9110 allows.
"""

from __future__ import annotations

import re

from ..registry.errors import RANGE_INVALID, RegistryError

_SPEC = re.compile(r"^(\d{0,100})-(\d{0,100})$")
"""Positions of any size a client may write (a last position past the end is trimmed to it); the bound only keeps
a hostile header from costing a long integer conversion."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `[start, stop)` window the header asks for, or None to serve everything; raises 416 if unsatisfiable."""
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in specs:
        return None
    match = _SPEC.match(specs.strip())
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - suffix, 0), size
    start = int(match[1])
    stop = size if match[2] == "" else int(match[2]) + 1
    if stop <= start and match[2] != "":
        return None  # last before first: not a valid range, so no range at all
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(stop, size)


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        RANGE_INVALID, f"range not satisfiable for {size} bytes", headers={"Content-Range": f"bytes */{size}"}
    )


def streamed_window(window: tuple[int, int] | None, size: int, headers: dict[str, str]) -> tuple[int, int, int]:
    """Status, start and stop of a streamed (not sendfile) answer: 206 with `Content-Range` added to `headers` for a
    window, 200 for the whole blob. FileResponse does this itself for files sent with sendfile."""
    if window is None:
        return 200, 0, size
    start, stop = window
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return 206, start, stop
