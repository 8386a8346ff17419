"""Manifests pulled through: fetched from the upstream on a miss, tags revalidated with a HEAD at most once per
`ttl`, and whatever is cached served while the upstream is down.

Cached manifests are ordinary content: stored through the registry logic under the local name, tags included,
so catalog, tag lists and later pulls see them. Their blobs and an index's other platforms are fetched when a
client asks for them, so the store takes them without its reference check (the upstream verified them).

Everything here holds for the whole registry, not one worker: when the upstream last confirmed a tag is kept in
the metadata store (the ttl clock every worker and node reads), and a manifest's fetch, like a revalidation with a
ttl, is claimed there (`claims`), so however many workers miss it at once the upstream is asked once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from docker_registry.core.digest import Digest, DigestError, parse_digest

from ..registry.errors import (
    DIGEST_INVALID,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    TOOMANYREQUESTS,
    UNAVAILABLE,
    RegistryError,
)
from ..registry.service import Registry
from .claims import Claims
from .targets import StaleObserver, Target
from .upstream import UpstreamError, UpstreamNotFound

log = logging.getLogger(__name__)


class Manifests:
    def __init__(self, registry: Registry, limit: int, stale: StaleObserver, claims: Claims) -> None:
        self._registry = registry
        self._stale = stale
        self._limit = limit
        self._claims = claims
        self._flights: dict[tuple[str, str], asyncio.Future[None]] = {}
        """This worker's requests in progress, so concurrent pulls of one reference share one task (and one claim)."""

    async def ensure(self, target: Target, reference: str | Digest) -> None:
        """Make the manifest servable from the store: cached already and fresh enough, or fetched now. Raises
        MANIFEST_UNKNOWN when the upstream has no such manifest, UNAVAILABLE when it cannot be reached and
        nothing is cached. Concurrent requests for one reference share one task, which a client that goes away
        does not cancel."""
        key = (target.local_name, str(reference))
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ensure(target, reference))
            self._flights[key] = task
            task.add_done_callback(partial(self._finished, key))
        await asyncio.shield(task)

    def _finished(self, key: tuple[str, str], task: asyncio.Future[None]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: the requests that waited for it re-raised it, if any still waited

    async def _ensure(self, target: Target, reference: str | Digest) -> None:
        if isinstance(reference, Digest):
            await self._by_digest(target, reference)
        elif target.upstream.settings.ttl > 0:  # one revalidation per ttl for the whole registry
            await self._claims.once(
                f"{target.local_name}:{reference}",
                partial(self._stale_tag, target, reference),
                partial(self._revalidate, target, reference),
            )
        else:  # every pull asks the upstream anyway: nothing to share
            await self._revalidate(target, reference)

    async def _by_digest(self, target: Target, digest: Digest, tag: str | None = None) -> bool:
        """Fetch and store the manifest unless it is stored already (content by digest never changes: never asked
        again); `tag` is set with it when it was fetched for that tag. True when this call stored it."""
        stored = False

        async def missing(waited: bool) -> bool:
            return await self._registry.store.manifest(target.local_name, digest) is None

        async def fetch() -> None:
            nonlocal stored
            raw, media_type = await self._fetch(target, str(digest))
            await self._store(target, digest, raw, media_type, [tag] if tag is not None else [])
            stored = True

        await self._claims.once(f"{target.local_name}@{digest}", missing, fetch)
        return stored

    async def _stale_tag(self, target: Target, tag: str, waited: bool) -> bool:
        """True unless the tag is cached and the upstream confirmed it within its ttl (by any worker or node). A
        caller that `waited` for another's revalidation takes its outcome: the tag it confirmed or moved, or, when
        the upstream failed it, the cached tag served stale (rather than asking the unreachable upstream again)."""
        store = self._registry.store
        if await store.tag_digest(target.local_name, tag) is None:
            return True
        if waited:
            return False
        checked = await store.read(store.sync.proxy_tag_checked_at, target.local_name, tag)
        return checked is None or time.time() - checked >= target.upstream.settings.ttl

    async def _revalidate(self, target: Target, tag: str) -> None:
        """Ask the upstream where the tag points (a HEAD) and follow it: the manifest fetched when not stored, the
        tag moved when it moved; the cached tag served, with a warning, while the upstream is unreachable."""
        store = self._registry.store
        asked = time.time()
        # the cached tag is read while the upstream is asked: one database round trip less before the answer
        cached, answer = await asyncio.gather(store.tag_digest(target.local_name, tag), self._head(target, tag))
        if isinstance(answer, UpstreamNotFound):
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": tag}) from None
        if isinstance(answer, UpstreamError):
            if cached is None:
                raise answer.client_error() from None
            self._serve_stale(target, tag, str(answer))
            return
        try:
            await self._follow(target, tag, answer, cached)
        except RegistryError as exc:
            # it answered the HEAD, then failed the GET (Docker Hub's pull limit counts GETs, not HEADs) or sent a
            # bad manifest
            if cached is None or exc.error not in (UNAVAILABLE, TOOMANYREQUESTS):
                raise
            self._serve_stale(target, tag, exc.message)
            return
        if target.upstream.settings.ttl > 0:
            await store.write_transient(store.sync.mark_proxy_tag_checked, target.local_name, tag, asked)

    def _serve_stale(self, target: Target, tag: str, reason: str) -> None:
        """The cached tag is served as it is, the upstream unavailable for now: said in the log and the metrics."""
        log.warning("serving %s:%s from the cache, upstream unavailable: %s", target.local_name, tag, reason)
        self._stale("tag")

    async def _follow(self, target: Target, tag: str, upstream_digest: Digest | None, cached: Digest | None) -> None:
        """Store what the upstream's tag points at now: the manifest fetched when not stored, the tag moved."""
        store = self._registry.store
        if upstream_digest is None:  # the upstream named no digest: fetched by tag, checked against nothing more
            raw, media_type = await self._fetch(target, tag)
            await self._store(target, tag, raw, media_type, [])
        elif upstream_digest != cached:
            stored_with_tag = await self._by_digest(target, upstream_digest, tag)
            if not stored_with_tag and await store.tag_digest(target.local_name, tag) != upstream_digest:
                # cached already (by digest, or fetched for another tag): only the tag moves
                stored = await store.manifest(target.local_name, upstream_digest)
                if stored is None:
                    raise RegistryError(UNAVAILABLE, message="the manifest vanished while its tag moved", status=503)
                await self._registry.put_manifest(
                    target.local_name,
                    upstream_digest,
                    stored.content,
                    stored.media_type,
                    [tag],
                    check_references=False,
                    announce=False,
                )

    async def _head(self, target: Target, tag: str) -> Digest | UpstreamError | UpstreamNotFound | None:
        """The digest the upstream names for `tag` (None when it names none), or why it could not say, as a value:
        the caller decides once it also has the cached tag."""
        try:
            return _digest(await target.upstream.manifest_digest(target.remote_name, tag))
        except (UpstreamError, UpstreamNotFound) as exc:
            return exc

    async def _store(
        self, target: Target, reference: str | Digest, raw: bytes, media_type: str, tags: list[str]
    ) -> None:
        """Store a manifest fetched from the upstream. One the registry refuses (not the digest's bytes, or not a
        manifest at all) is the upstream's fault, not the client's: 502, as a gateway answers for a bad upstream,
        rather than the 400 a push of it would get."""
        try:
            await self._registry.put_manifest(
                target.local_name, reference, raw, media_type, tags, check_references=False, announce=False
            )
        except RegistryError as exc:
            if exc.error not in (DIGEST_INVALID, MANIFEST_INVALID):
                raise
            log.warning("upstream manifest %s of %s refused: %s", reference, target.remote_name, exc.message)
            message = f"the upstream's manifest was refused: {exc.message}"
            raise RegistryError(UNAVAILABLE, exc.detail, message=message, status=502) from None

    async def _fetch(self, target: Target, reference: str) -> tuple[bytes, str]:
        try:
            return await target.upstream.manifest(target.remote_name, reference, self._limit)
        except UpstreamNotFound:
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": reference}) from None
        except UpstreamError as exc:
            raise exc.client_error() from None


def _digest(value: str | None) -> Digest | None:
    """The upstream's `Docker-Content-Digest`, if it gave a valid one (otherwise the manifest is fetched by tag)."""
    if value is None:
        return None
    try:
        return parse_digest(value)
    except DigestError:
        return None
