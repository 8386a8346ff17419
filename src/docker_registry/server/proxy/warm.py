"""What a freshly started worker's first pull through the cache would otherwise pay for itself, done as the worker
starts, before it serves.

Measured on a cold pull through a fresh cache (`bench/proxy_steps.py`, traced per step): the first time a worker
runs each database statement, SQLAlchemy compiles it (0.5 to 7 ms each, a dozen on a cold pull), the first read of
each reader thread opens its SQLite connection, the first upstream request opens the connection to the upstream
(and, over TLS, makes the handshake), and the thread pools start their threads one by one. A second pull through the
same worker pays none of it. So, when a proxy is configured, each worker at start:

- runs the reads of a cold pull once, several at a time (so several reader threads open their connections), with
  a repository name and digest that match nothing;
- rehearses the writes of a cold pull (the manifest claim and its release, the tag check, the manifest's save with
  its tag, a blob's pin, link and upload finish) in one transaction that is rolled back (`StoreBase.rehearse`):
  their statements are compiled, nothing is written;
- starts a few threads of the default pool, which hashes and writes fetched blobs;
- and, in the background (never holding up the start, whatever the upstream does), asks each upstream for `/v2/`,
  which opens a connection the client session keeps for its first pull (aiohttp keeps an idle one 15 s), and
  answers 401 from an upstream that wants credentials: nothing more is learnt or kept from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial

import aiohttp

from docker_registry.core.digest import Digest

from ..registry.manifests import parse_manifest
from ..registry.service import Registry
from .upstream import Upstream

log = logging.getLogger(__name__)

NAME = "docker-registry-warm-up/nothing"
"""A repository no read finds (the rehearsed writes that create it are rolled back)."""
TAG = "warm-up"
NOTHING = Digest("sha256", "0" * 64)
MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:' + b"0" * 64 + b'",'
    b'"size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'
    + b"1" * 64
    + b'","size":1}]}'
)
THREADS = 4
"""Threads of the default pool started: a cold pull of three layers hashes and writes three blobs at once."""
UPSTREAM_TIMEOUT = 2.0
"""Seconds the background `/v2/` request to an upstream may take; an upstream slower or down is left alone."""


async def prepare_store(registry: Registry) -> None:
    """Compile the cache's statements and open reader connections; changes nothing stored."""
    store, sync = registry.store, registry.store.sync
    now = time.time()
    await asyncio.gather(
        store.tag_digest(NAME, TAG),
        store.manifest(NAME, NOTHING),
        store.read(sync.blob_sizes, NAME, NOTHING, ""),
        store.known_blob_size(NOTHING),
        store.read(sync.proxy_fetch_claimed, NAME, now),
        store.read(sync.proxy_tag_checked_at, NAME, TAG),
    )
    manifest = parse_manifest(MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    owner = uuid.uuid4().hex
    await store.rehearse(
        [
            partial(sync.claim_proxy_fetch, NAME, owner, now, 1.0),
            partial(sync.release_proxy_fetch, NAME, owner),
            partial(sync.mark_proxy_tag_checked, NAME, TAG, now),
            partial(sync.put_manifest, NAME, manifest, [TAG], (), False),
            partial(sync.pin_blob, NOTHING, 1, owner),
            partial(sync.finish_upload, owner, NAME, NOTHING, 1, None),
            partial(sync.link_blob, NAME, NOTHING, 1, recorded=True),
        ]
    )
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0) for _ in range(THREADS)))


async def open_upstream(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    """One `GET /v2/` to the upstream, so its connection is open when the first pull comes; any failure is only
    logged (at debug level: the pulls report an unavailable upstream themselves)."""
    url = f"{upstream.settings.remoteurl}/v2/"
    try:
        async with asyncio.timeout(UPSTREAM_TIMEOUT), session.get(url) as response:
            await response.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.debug("warm-up request to %s failed: %s", upstream.settings.remoteurl, type(exc).__name__)


@contextlib.asynccontextmanager
async def warmed(registry: Registry, upstreams: list[Upstream], session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Prepare the store now and open the upstream connections in the background while the worker serves; the
    background requests are cancelled if still running when the worker stops. A failure to prepare is logged and
    the worker serves anyway: its first pull then pays what it always did."""
    try:
        await prepare_store(registry)
    except Exception as exc:
        log.warning("could not prepare the cache's statements at start: %s", exc)
    opening = [asyncio.create_task(open_upstream(upstream, session)) for upstream in upstreams]
    try:
        yield
    finally:
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
