"""Manifests pulled through: fetched from the upstream on a miss, tags revalidated with a HEAD at most once per
`ttl`, and whatever is cached served while the upstream is down.

Cached manifests are ordinary content: stored through the registry logic under the local name, tags included,
so catalog, tag lists and later pulls see them. Their blobs and an index's other platforms are fetched when a
client asks for them, so the store takes them without its reference check (the upstream verified them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from docker_registry.core.digest import Digest, DigestError, parse_digest

from ..registry.errors import MANIFEST_UNKNOWN, UNAVAILABLE, RegistryError
from ..registry.service import Registry
from .targets import StaleObserver, Target
from .upstream import UpstreamError, UpstreamNotFound

log = logging.getLogger(__name__)


class Manifests:
    def __init__(self, registry: Registry, limit: int, stale: StaleObserver) -> None:
        self._registry = registry
        self._stale = stale
        self._limit = limit
        self._checked: dict[tuple[str, str], float] = {}
        """(local name, tag) -> monotonic time the upstream last confirmed it (per worker)."""
        self._flights: dict[tuple[str, str], asyncio.Future[None]] = {}
        """Fetches in progress, so concurrent pulls of one manifest cause one upstream request."""

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
        else:
            await self._by_tag(target, reference)

    async def _by_digest(self, target: Target, digest: Digest) -> None:
        if await self._registry.store.manifest(target.local_name, digest) is not None:
            return  # content by digest never changes: never asked again
        raw, media_type = await self._fetch(target, str(digest))
        await self._registry.put_manifest(target.local_name, digest, raw, media_type, check_references=False)

    async def _by_tag(self, target: Target, tag: str) -> None:
        key = (target.local_name, tag)
        cached = await self._registry.store.tag_digest(target.local_name, tag)
        checked = self._checked.get(key)
        if cached is not None and checked is not None and time.monotonic() - checked < target.upstream.settings.ttl:
            return
        try:
            upstream_digest = _digest(await target.upstream.manifest_digest(target.remote_name, tag))
        except UpstreamNotFound:
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": tag}) from None
        except UpstreamError as exc:
            if cached is None:
                raise RegistryError(UNAVAILABLE, message=f"upstream unavailable: {exc}", status=503) from None
            log.warning("serving %s:%s from the cache, upstream unavailable: %s", target.local_name, tag, exc)
            self._stale("tag")
            return
        if cached is not None and upstream_digest == cached:
            self._checked[key] = time.monotonic()
            return
        stored = None
        if upstream_digest is not None:
            stored = await self._registry.store.manifest(target.local_name, upstream_digest)
        if stored is not None:  # the tag moved to a manifest cached already (by digest): only the tag moves
            raw, media_type = stored.content, stored.media_type
        else:
            raw, media_type = await self._fetch(target, str(upstream_digest or tag))
        # by digest when the upstream named one: the bytes fetched are then checked against it
        reference: str | Digest = upstream_digest or tag
        extra = [tag] if upstream_digest else []
        await self._registry.put_manifest(target.local_name, reference, raw, media_type, extra, check_references=False)
        self._checked[key] = time.monotonic()

    async def _fetch(self, target: Target, reference: str) -> tuple[bytes, str]:
        try:
            return await target.upstream.manifest(target.remote_name, reference, self._limit)
        except UpstreamNotFound:
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": reference}) from None
        except UpstreamError as exc:
            raise RegistryError(UNAVAILABLE, message=f"upstream unavailable: {exc}", status=503) from None


def _digest(value: str | None) -> Digest | None:
    """The upstream's `Docker-Content-Digest`, if it gave a valid one (otherwise the manifest is fetched by tag)."""
    if value is None:
        return None
    try:
        return parse_digest(value)
    except DigestError:
        return None
