"""POSTs to a plain `http://` endpoint over one keep-alive HTTP/1.1 connection, written and read by hand.

aiohttp's client spends 200-250 µs of CPU on a POST on loopback whatever its size (its request and response
objects, the connector, tracing hooks, the cookie and redirect machinery), about 2.5 µs per event in envelopes of
100; this writes the request head it built once plus the body, and reads the status line, the headers it needs and
the body, for about a fifth of that (`bench/README.md`, notifications, 2026-12-05 late session). The envelope is
the same bytes either way.

Anything beyond a plain exchange is left to aiohttp (`Deliverer` keeps it for those): `https://` endpoints and URLs
holding credentials are never posted here, and a redirect (3xx) is answered with `Redirected`, after which the
caller posts that envelope, and all later ones, with aiohttp, which follows redirects as Distribution's client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp.http import SERVER_SOFTWARE

HEAD_LIMIT = 65536
"""The most bytes of a response's status line and headers read; beyond, the answer counts as a failure."""


class PostFailed(Exception):
    """The exchange failed (connection refused or lost, malformed answer, timeout): counted as a failure."""


class Redirected(Exception):
    """The endpoint answered with a redirect (a 3xx status), which this client does not follow."""


def plain(url: str) -> bool:
    """True when `url` can be posted here: `http://`, no user or password in it."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.username is None and parts.password is None


class Poster:
    """One endpoint's connection: `post` sends one envelope and answers the status; one POST at a time (the
    deliverer sends an endpoint's envelopes one after another)."""

    def __init__(self, url: str, headers: Sequence[tuple[str, str]], timeout: float) -> None:
        parts = urlsplit(url)
        if not plain(url) or parts.hostname is None:
            raise ValueError(f"not a plain http:// URL: {url}")
        self._host, self._port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*", f"User-Agent: {SERVER_SOFTWARE}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()  # as aiohttp encodes headers
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        """POST `body`; the answer's status. Raises `PostFailed`, or `Redirected` for a 3xx answer."""
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._exchange(body)
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as error:
            self.close()  # in an unknown state: the next POST opens a new connection
            raise PostFailed(str(error) or type(error).__name__) from error
        except BaseException:  # cancelled mid-exchange
            self.close()
            raise
        if 300 <= status < 400:
            raise Redirected(status)
        return status

    def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    async def _exchange(self, body: bytes) -> int:
        if self._writer is None or self._writer.is_closing() or self._reader is None or self._reader.at_eof():
            self.close()  # the endpoint closed an idle connection: seen before writing to it, as aiohttp does
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port, limit=HEAD_LIMIT)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.writelines((self._head, b"%d\r\n\r\n" % len(body), body))
        while True:
            status, headers, version = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if not 100 <= status < 200:  # an interim answer (100 Continue) is followed by the real one
                break
        keep = await _read_body(reader, status, headers)
        connection = headers.get("connection", "")
        if not keep or "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self.close()
        return status


def _parse_head(head: bytes) -> tuple[int, dict[str, str], str]:
    """The status, the headers (names in lower case; of a repeated one, the last) and the HTTP version."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"malformed status line {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip().lower()
    return int(rest[:3]), headers, version


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> bool:
    """Read and drop the answer's body; False when it ended with the connection (which then cannot be reused)."""
    if status in (204, 304):
        return True
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                    pass
                return True
            await reader.readexactly(size + 2)
    length = headers.get("content-length")
    if length is not None:
        await reader.readexactly(int(length))
        return True
    await reader.read()  # no length given: the body ends with the connection
    return False
