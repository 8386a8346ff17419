"""One upstream registry as the cache sees it: manifests and blobs fetched over HTTP with aiohttp's client, after
whatever authentication the upstream asks for (none, Basic, or Docker's token flow).

The token flow follows the upstream's `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge and
keeps each token per scope until shortly before it expires, so a pull costs one token request per repository,
not one per blob. Credentials go only into request headers: nothing here logs them, and errors name the upstream
by its URL alone.

An upstream that answers 429 (Docker Hub's pull limit) is asked nothing more for the time its `Retry-After` says
(`throttle_seconds`): meanwhile the cache serves what it holds, and what it does not hold is 429 TOOMANYREQUESTS
with the upstream's own reason and the time left, so a client learns why and when to come back rather than getting
a 503 or adding to the count that keeps it limited.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp

from ..registry.errors import TOOMANYREQUESTS, UNAVAILABLE, RegistryError

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)
TOKEN_MARGIN = 10.0
"""Seconds before its announced expiry a token is no longer used: it must not run out while a request is on its
way."""
DEFAULT_TOKEN_LIFETIME = 60.0
"""The token specification's default when the answer gives no `expires_in`."""
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
THROTTLE_DEFAULT = 30.0
"""Seconds an upstream is left alone after a 429 that gave no usable `Retry-After`."""
THROTTLE_LONGEST = 3600.0
"""The longest a `Retry-After` keeps the cache from asking: a wrong or huge value does not cut it off for days."""
_DELAY = re.compile(r"[0-9]{1,12}")
"""`Retry-After` in seconds (RFC 9110 10.2.3); more digits than this are no delay anyone means."""
REASON_LENGTH = 300
"""Characters of the upstream's own message passed on to clients."""


class UpstreamError(Exception):
    """The upstream could not answer: unreachable, timed out, 5xx, or it refused our credentials."""

    def client_error(self) -> RegistryError:
        """What a client is told when nothing cached answers in the upstream's place."""
        return RegistryError(UNAVAILABLE, message=f"upstream unavailable: {self}", status=503)


class UpstreamTooLarge(UpstreamError):
    """The upstream sent more than the registry takes (a manifest over 4 MiB): no passing failure, so no 503 that
    invites the client to retry; a bad gateway, as for a manifest the upstream sends wrong."""

    def client_error(self) -> RegistryError:
        return RegistryError(UNAVAILABLE, message=f"upstream sent too much: {self}", status=502)


class UpstreamThrottled(UpstreamError):
    """The upstream limits our requests (it answered 429): it is asked nothing more before `until`."""

    def __init__(self, remoteurl: str, reason: str, until: float) -> None:
        super().__init__(f"{remoteurl} is limiting our requests: {reason}")
        self.until = until
        """`time.monotonic()` at which the upstream may be asked again."""

    def client_error(self) -> RegistryError:
        left = max(1, math.ceil(self.until - time.monotonic()))
        return RegistryError(TOOMANYREQUESTS, message=str(self), headers={"Retry-After": str(left)})


class UpstreamNotFound(Exception):
    """The upstream answered 404: it has no such manifest or blob."""


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """What the configuration says of one upstream (mirror mode has one with an empty prefix)."""

    prefix: str
    remoteurl: str
    username: str | None
    password: str | None
    ttl: float

    @property
    def host(self) -> str:
        return self.remoteurl.split("://", 1)[1].split("/", 1)[0]


@dataclass
class _Tokens:
    basic: bool = False
    """The upstream asked for Basic: send it with every request from then on."""
    bearer: dict[str, tuple[str, float]] = field(default_factory=dict)
    """scope -> (token, monotonic time it stops being used)."""


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class Upstream:
    """The HTTP client of one upstream; one per worker, sharing the worker's client session."""

    def __init__(self, settings: UpstreamSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._session = session
        self._tokens = _Tokens()
        self._throttled: tuple[str, float] | None = None
        """The reason the upstream gave for its last 429, and until when it is left alone."""
        self._basic = (
            aiohttp.BasicAuth(settings.username, settings.password or "") if settings.username is not None else None
        )

    def _url(self, path: str) -> str:
        return f"{self.settings.remoteurl}/v2/{path}"

    def _cached_auth(self, scope: str) -> dict[str, str]:
        token = self._tokens.bearer.get(scope)
        if token is not None and token[1] > time.monotonic():
            return {"Authorization": f"Bearer {token[0]}"}
        if self._tokens.basic and self._basic is not None:
            return {"Authorization": self._basic.encode()}
        return {}

    async def _authorize(self, header: str, scope: str) -> dict[str, str] | None:
        """Answer a 401's challenge: Basic with our credentials, or a bearer token from the realm it names."""
        scheme, params = _challenge(header)
        if scheme == "basic":
            if self._basic is None:
                return None
            self._tokens.basic = True
            return {"Authorization": self._basic.encode()}
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        try:
            async with self._session.get(params["realm"], params=query, auth=self._basic) as response:
                if response.status == 429:
                    raise await self._throttle(response)
                if response.status != 200:
                    raise UpstreamError(f"token service of {self.settings.remoteurl} answered {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamError(f"token service of {self.settings.remoteurl}: {type(exc).__name__}") from None
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"token service of {self.settings.remoteurl} gave no token")
        lifetime = answer.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else DEFAULT_TOKEN_LIFETIME
        self._tokens.bearer[scope] = (token, time.monotonic() + lifetime - TOKEN_MARGIN)
        return {"Authorization": f"Bearer {token}"}

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, path: str, remote_name: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request to `/v2/<path>` of the upstream, authenticated as it asks; yields a 200 or 206 answer (or,
        for `HEAD`, any 2xx), raises UpstreamNotFound on 404 and UpstreamError on anything else."""
        self._check_throttle()
        scope = f"repository:{remote_name}:pull"
        url = self._url(path)
        wanted = dict(headers or {})
        try:
            response = await self._session.request(method, url, headers={**wanted, **self._cached_auth(scope)})
            if response.status == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                auth = await self._authorize(challenge, scope)
                if auth is None:
                    raise UpstreamError(f"{self.settings.remoteurl} asks for credentials we do not have")
                response = await self._session.request(method, url, headers={**wanted, **auth})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{self.settings.remoteurl}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status == 404:
                raise UpstreamNotFound(path)
            if response.status == 429:
                raise await self._throttle(response)
            if not 200 <= response.status < 300:
                raise UpstreamError(f"{self.settings.remoteurl} answered {response.status} to {method} {path}")
            yield response
        finally:
            response.release()

    def _check_throttle(self) -> None:
        if self._throttled is None:
            return
        reason, until = self._throttled
        if time.monotonic() < until:
            raise UpstreamThrottled(self.settings.remoteurl, reason, until)
        self._throttled = None

    async def _throttle(self, response: aiohttp.ClientResponse) -> UpstreamThrottled:
        """Leave the upstream alone for the time its 429 asks, and say why, in its own words when it gave some."""
        reason = "too many requests"
        with contextlib.suppress(UpstreamError, ValueError, LookupError, TypeError):  # no JSON error body
            document = json.loads(await self._body(response, 64 * 1024, "error"))
            message = document["errors"][0]["message"]
            if isinstance(message, str) and message.strip():
                reason = message.strip()[:REASON_LENGTH]
        seconds = throttle_seconds(response.headers.get("Retry-After"))
        if self._throttled is None:
            log.warning("%s answered 429 (%s): asking it nothing for %d s", self.settings.remoteurl, reason, seconds)
        until = time.monotonic() + seconds
        self._throttled = (reason, until)
        return UpstreamThrottled(self.settings.remoteurl, reason, until)

    async def manifest_digest(self, remote_name: str, reference: str) -> str | None:
        """The digest a tag points to upstream, by a HEAD (which Docker Hub does not count as a pull)."""
        async with self.request("HEAD", f"{remote_name}/manifests/{reference}", remote_name, {"Accept": ACCEPT}) as r:
            return r.headers.get("Docker-Content-Digest")

    async def manifest(self, remote_name: str, reference: str, limit: int) -> tuple[bytes, str]:
        """A manifest's bytes and media type; at most `limit` bytes are read."""
        async with self.request("GET", f"{remote_name}/manifests/{reference}", remote_name, {"Accept": ACCEPT}) as r:
            raw = await self._body(r, limit, "manifest")
            return raw, r.headers.get("Content-Type", "").split(";")[0].strip()

    async def blob_size(self, remote_name: str, digest: str) -> int | None:
        async with self.request("HEAD", f"{remote_name}/blobs/{digest}", remote_name) as r:
            return r.content_length

    async def tags(self, remote_name: str, query: dict[str, str], limit: int) -> tuple[bytes, str | None]:
        """The upstream's tag list (one page: `n` and `last` passed on) and its `Link` header."""
        path = f"{remote_name}/tags/list" + (f"?{urlencode(query)}" if query else "")
        async with self.request("GET", path, remote_name) as r:
            return await self._body(r, limit, "tag list"), r.headers.get("Link")

    async def referrers(self, remote_name: str, digest: str, query: str, limit: int) -> tuple[bytes, dict[str, str]]:
        """The upstream's referrers index of a manifest (`query`, the raw query string of its `artifactType` filter
        and page, passed on) and the headers that go with it (`OCI-Filters-Applied`, `Link`); UpstreamNotFound
        when the upstream has no referrers API."""
        path = f"{remote_name}/referrers/{digest}" + (f"?{query}" if query else "")
        async with self.request("GET", path, remote_name, {"Accept": MANIFEST_TYPES[0]}) as r:
            kept = {name: r.headers[name] for name in ("OCI-Filters-Applied", "Link") if name in r.headers}
            return await self._body(r, limit, "referrers index"), kept

    async def _body(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        """The whole body, of at most `limit` bytes. A `read(n)` gives what has arrived, up to `n`: a body that comes
        in several pieces (a large manifest over the internet, TLS records) is read until its end."""
        body = bytearray()
        try:
            while len(body) <= limit and (piece := await response.content.read(limit + 1 - len(body))):
                body += piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{self.settings.remoteurl}: {type(exc).__name__}") from None
        if len(body) > limit:
            raise UpstreamTooLarge(f"{self.settings.remoteurl}: {what} larger than {limit} bytes")
        return bytes(body)

    def blob(self, remote_name: str, digest: str) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("GET", f"{remote_name}/blobs/{digest}", remote_name)


def throttle_seconds(retry_after: str | None) -> float:
    """How long a 429's `Retry-After` (seconds, or an HTTP date) asks us to wait, within sane bounds."""
    if retry_after is None:
        return THROTTLE_DEFAULT
    value = retry_after.strip()
    if _DELAY.fullmatch(value):
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return THROTTLE_DEFAULT
    return min(max(seconds, 1.0), THROTTLE_LONGEST)
