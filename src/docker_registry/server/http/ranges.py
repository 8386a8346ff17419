"""The `Range` header of blob GETs (RFC 9110 14): the byte windows it asks for, and how an answer frames them.

Satisfiable ranges are served in the order asked: one as a 206 with `Content-Range`, several as one 206
`multipart/byteranges` answer (14.6), which zstd:chunked and eStargz pulls ask for to fetch only the files a layer
adds. Ranges starting past the end are left out; when none is left the answer is 416 with `Content-Range:
bytes */<size>`. Another unit or a malformed value is ignored and the whole blob is served, as RFC 9110 allows; so
are ranges adding up to more than the blob, as Go's net/http does (only overlaps do that: a few bytes of header
asking for the same bytes many times over would cost a large answer), and more than `MOST_RANGES` (each costs a
`sendfile`, or a storage read on S3).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from ..registry.errors import RANGE_INVALID, RegistryError

Window = tuple[int, int]
"""Bytes `[start, stop)` of a blob."""
MOST_RANGES = 1024
"""The most ranges served in one answer: what containers/storage asks for at most in one request of a zstd:chunked
layer (`maxNumberMissingChunks`)."""
_SPEC = re.compile(r"^([0-9]{0,100})-([0-9]{0,100})$")
"""Positions of any size a client may write (a last position past the end is trimmed to it); the bound only keeps
a hostile header from costing a long integer conversion."""


def byte_ranges(header: str | None, size: int) -> list[Window] | None:
    """The windows the header asks for, or None to serve everything; raises 416 if none is satisfiable."""
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    windows: list[Window] = []
    asked = 0
    for spec in specs.split(","):
        spec = spec.strip()
        if not spec:  # an empty list element, which recipients accept (RFC 9110 5.6.1)
            continue
        match = _SPEC.match(spec)
        if match is None or match[1] == match[2] == "":
            return None
        asked += 1
        if match[1] == "":
            suffix = int(match[2])
            if suffix and size:
                windows.append((max(size - suffix, 0), size))
            continue
        start = int(match[1])
        if match[2] != "" and int(match[2]) < start:
            return None  # last before first: not a valid range, so no range at all
        if start < size:
            windows.append((start, size if match[2] == "" else min(int(match[2]) + 1, size)))
    if not asked:
        return None
    if not windows:
        raise RegistryError(
            RANGE_INVALID, f"range not satisfiable for {size} bytes", headers={"Content-Range": f"bytes */{size}"}
        )
    if len(windows) > MOST_RANGES or (len(windows) > 1 and sum(stop - start for start, stop in windows) > size):
        return None
    return windows


@dataclass(frozen=True, slots=True)
class Framing:
    """What an answer of `windows` sends: its status and length, each window's bytes with what goes before them,
    and what ends the answer."""

    status: int
    length: int
    parts: list[tuple[bytes, int, int]]
    """(bytes sent before the window, start, stop) for each window."""
    end: bytes


def framing(windows: list[Window] | None, size: int, headers: dict[str, str]) -> Framing:
    """How to answer with `windows` of a `size`-byte blob (None: all of it); sets `Content-Range` in `headers` for
    one window, the multipart `Content-Type` with its boundary for several."""
    if windows is None:
        return Framing(200, size, [(b"", 0, size)], b"")
    if len(windows) == 1:
        start, stop = windows[0]
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return Framing(206, stop - start, [(b"", start, stop)], b"")
    boundary = secrets.token_hex(16)
    kind = headers.get("Content-Type", "application/octet-stream")
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    parts = []
    for number, (start, stop) in enumerate(windows):
        head = f"--{boundary}\r\nContent-Type: {kind}\r\nContent-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
        parts.append(((b"\r\n" if number else b"") + head.encode(), start, stop))
    end = f"\r\n--{boundary}--\r\n".encode()
    return Framing(206, sum(len(head) + stop - start for head, start, stop in parts) + len(end), parts, end)
