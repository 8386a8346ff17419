"""The registry logic: repositories, manifests, tags, blobs, uploads and referrers, with no knowledge of HTTP.

Reads go through per-process caches first; the metadata store is reached through its async facade, so the event
loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from docker_registry.core.digest import Digest, blob_path
from docker_registry.core.driver import Base

from ..store.facade import AsyncMetadataStore
from ..store.models import BadReference, EventRecord, Manifest, Referrer, StoredManifest, Upload
from .cache import BoundedCache, RegistryCache
from .errors import (
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    JSONValue,
    RegistryError,
)
from .events import BLOB_MEDIA_TYPE, Action, EventRecorder, Target, pulled_target
from .manifests import OCI_INDEX, default_platform, parse_manifest
from .uploads import Uploads

REFERRERS_PAGE_ENTRIES = 1000
"""Most descriptors on one page of the referrers API (typically 250-400 bytes each)."""
REFERRERS_PAGE_BYTES = 1024 * 1024
"""Most bytes of descriptors on one page of the referrers API, unless its one descriptor is larger."""

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Blob:
    digest: Digest
    size: int
    manifest: StoredManifest | None = None
    """Set when the digest names a manifest of the repository: served from the metadata store, as Distribution
    serves manifests from its blob store too."""


def _bad_reference(e: BadReference) -> RegistryError:
    """MANIFEST_BLOB_UNKNOWN for a missing blob, as Distribution; MANIFEST_UNKNOWN for a missing child manifest of
    an index, as the issue that specified indexes asked (Distribution 2.8 answers MANIFEST_BLOB_UNKNOWN there too:
    clients fail the push either way); a wrong size is an invalid manifest."""
    if e.stored_size is not None:
        message = f"descriptor of {e.kind} {e.digest} gives size {e.declared_size}, but it has {e.stored_size} bytes"
        return RegistryError(MANIFEST_INVALID, {"digest": str(e.digest), "size": e.declared_size}, message=message)
    detail = {"digest": str(e.digest)}
    if e.kind == "blob":
        return RegistryError(MANIFEST_BLOB_UNKNOWN, detail, message=f"blob unknown: {e.digest}")
    return RegistryError(MANIFEST_UNKNOWN, detail, message=f"manifest unknown: {e.digest}", status=400)


def _blob_target(repository: str, digest: Digest, size: int, source: str | None = None) -> Target:
    return Target("blob", repository, digest, BLOB_MEDIA_TYPE, size, from_repository=source)


def _manifest_target(repository: str, manifest: Manifest, tag: str | None) -> Target:
    references = [*manifest.blobs, *manifest.foreign, *manifest.children]
    return Target(
        "manifest", repository, manifest.digest, manifest.media_type, len(manifest.raw), tag, references=references
    )


def _descriptor(referrer: Referrer) -> dict[str, JSONValue]:
    d: dict[str, JSONValue] = {"mediaType": referrer.media_type, "digest": str(referrer.digest), "size": referrer.size}
    if referrer.artifact_type:
        d["artifactType"] = referrer.artifact_type
    if referrer.annotations:
        d["annotations"] = referrer.annotations
    return d


class Registry:
    def __init__(self, store: AsyncMetadataStore, driver: Base, cache: RegistryCache) -> None:
        self.store = store
        self.driver = driver
        self.cache = cache
        self.uploads = Uploads(store, driver)
        self.events: EventRecorder | None = None
        """Set by the notifications feature when an endpoint is configured; None costs the hot path nothing."""

    def _events(self, action: Action, *targets: Target) -> list[EventRecord]:
        return [] if self.events is None else self.events.record(action, targets)

    def _tag_deletions(self, repository: str) -> Callable[[Sequence[str]], list[EventRecord]]:
        """The events of the tags a manifest's deletion removes, known only in its transaction."""
        assert self.events is not None
        record = self.events.later("delete")
        return lambda names: record([Target("tag", repository, tag=name) for name in names])

    def _blob_events(self, action: Action, repository: str, digest: Digest) -> Callable[[int], list[EventRecord]]:
        """The events of a blob whose size is known only once its bytes are verified."""
        return lambda size: self._events(action, _blob_target(repository, digest, size))

    # --- manifests -----------------------------------------------------------------------------------------
    async def _read_through(
        self, cache: BoundedCache[K, V], key: K, load: Callable[[], Awaitable[V | None]], generation: int
    ) -> V | None:
        """The cached value, else `load()`'s; cached only if no commit was noticed since `generation` was taken
        (see RegistryCache.refresh), so a value read before a change is never kept."""
        value = cache.get(key)
        if value is None:
            value = await load()
            if value is not None and self.cache.generation == generation:
                cache.put(key, value)
        return value

    async def resolve(self, repository: str, reference: str | Digest) -> Digest:
        """The manifest digest a tag points to (a digest resolves to itself)."""
        if isinstance(reference, Digest):
            return reference
        generation = self.cache.refresh()
        key = (repository, reference)
        digest = await self._read_through(self.cache.tags, key, partial(self.store.tag_digest, *key), generation)
        if digest is None:
            raise await self._manifest_unknown(repository, reference)
        return digest

    async def get_manifest(
        self, repository: str, reference: str | Digest, *, pulled: bool = True
    ) -> tuple[Digest, StoredManifest]:
        """A manifest by tag or digest, with its digest; `pulled=False` for a look at it that is no pull (the web
        UI's page of it), which notifications do not report."""
        digest = await self.resolve(repository, reference)
        # resolve() refreshed already for a tag; the manifest then comes from the same generation
        generation = self.cache.refresh() if isinstance(reference, Digest) else self.cache.generation
        key = (repository, digest)
        manifest = await self._read_through(self.cache.manifests, key, partial(self.store.manifest, *key), generation)
        if manifest is None:
            raise await self._manifest_unknown(repository, reference)
        if pulled and self.events is not None:
            tag = None if isinstance(reference, Digest) else reference
            size = len(manifest.content)
            self.events.pulled(pulled_target("manifest", repository, digest, manifest.media_type, size, tag))
        return digest, manifest

    async def default_platform(self, repository: str, index: StoredManifest) -> tuple[Digest, StoredManifest] | None:
        """The image served by tag in place of a Docker manifest list to a client that cannot read one
        (`manifests.default_platform`), if the list has it and the repository holds it."""
        child = default_platform(index)
        if child is None:
            return None
        try:
            return await self.get_manifest(repository, child)
        except RegistryError:  # a pull-through cache holds an index's other images only once pulled
            return None

    async def _manifest_unknown(self, repository: str, reference: str | Digest) -> RegistryError:
        if not await self.store.repository_exists(repository):
            return RegistryError(NAME_UNKNOWN, {"name": repository})
        return RegistryError(MANIFEST_UNKNOWN, {"reference": str(reference)})

    async def put_manifest(
        self,
        repository: str,
        reference: str | Digest,
        raw: bytes,
        content_type: str,
        extra_tags: Sequence[str] = (),
        check_references: bool = True,
        announce: bool = True,
    ) -> Manifest:
        """Store a manifest pushed by tag or by digest; `extra_tags` (the spec's `?tag=`) point at it too, in the
        same transaction. `check_references=False` is for a pull-through cache, whose upstream holds the blobs
        and children the manifest names until they are pulled through; `announce=False` too: what it stores is
        no push (its client's GET is a pull, recorded as one)."""
        tag_names = list(extra_tags)
        algorithm = "sha256"
        if isinstance(reference, Digest):
            algorithm = reference.algorithm
        else:
            tag_names.insert(0, reference)
        manifest = parse_manifest(raw, content_type, algorithm)
        if isinstance(reference, Digest) and manifest.digest != reference:
            detail = {"digest": str(reference), "computed": str(manifest.digest)}
            raise RegistryError(DIGEST_INVALID, detail, message="manifest digest mismatch")
        tags: list[str | None] = [*tag_names] or [None]  # one event per tag, as Distribution's one tag per push
        targets = [_manifest_target(repository, manifest, tag) for tag in tags]
        events = self._events("push", *targets) if announce else []
        try:
            await self.store.put_manifest(repository, manifest, tag_names, events, check_references)
        except BadReference as e:
            raise _bad_reference(e) from None
        self.cache.clear()
        return manifest

    async def delete_manifest(self, repository: str, reference: str | Digest) -> None:
        if isinstance(reference, Digest):
            events = self._events("delete", Target("manifest", repository, reference))
            # and, as Distribution, a tag deletion for each tag that pointed at it (found in the same transaction)
            tag_events = None if self.events is None else self._tag_deletions(repository)
            deleted = await self.store.delete_manifest(repository, reference, events, tag_events)
        else:
            events = self._events("delete", Target("tag", repository, tag=reference))
            deleted = await self.store.delete_tag(repository, reference, events)
        self.cache.clear()
        if not deleted:
            raise await self._manifest_unknown(repository, reference)

    # --- tags, catalog, referrers ----------------------------------------------------------------------------
    async def tags(self, repository: str, last: str | None, limit: int | None) -> list[str]:
        tags = await self.store.tags(repository, last, limit)
        if tags is None:
            raise RegistryError(NAME_UNKNOWN, {"name": repository})
        return tags

    async def catalog(self, last: str | None, limit: int) -> list[str]:
        return await self.store.repositories(last, limit)

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None, after: Digest | None = None
    ) -> tuple[bytes, Digest | None]:
        """One page of the referrers API's answer: an OCI image index of the manifests whose subject is `subject`,
        from the first after `after`, and the last digest it lists when more remain. A page stays well under the
        4 MiB that clients read of an index (a referrer's annotations may be large), so a long list comes in
        several (the spec's `Link`)."""
        found = await self.store.referrers(repository, subject, artifact_type, after, REFERRERS_PAGE_ENTRIES + 1)
        listed: list[dict[str, JSONValue]] = []
        size = 0
        for referrer in found[:REFERRERS_PAGE_ENTRIES]:
            descriptor = _descriptor(referrer)
            size += len(json.dumps(descriptor))  # ASCII: characters are bytes
            if listed and size > REFERRERS_PAGE_BYTES:
                break
            listed.append(descriptor)
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
        return body, found[len(listed) - 1].digest if len(found) > len(listed) else None

    # --- blobs -----------------------------------------------------------------------------------------------
    async def blob(self, repository: str, digest: Digest, *, pulled: bool = True) -> Blob:
        """A blob this repository may serve, else BLOB_UNKNOWN; `pulled=False` as for `get_manifest`."""
        generation = self.cache.refresh()
        key = (repository, digest)
        size = self.cache.blobs.get(key)
        manifest = None if size is not None else self.cache.manifests.get(key)
        if size is None and manifest is None and not self.cache.missing.get(key):
            size, manifest, candidate = await self.store.blob_or_manifest(repository, digest)
            if candidate:  # garbage collection would delete the link: a client asking for it may be about to use it
                await self.store.touch_link(repository, digest)
            if self.cache.generation == generation:  # see _read_through
                if size is not None:
                    self.cache.blobs.put(key, size)
                elif manifest is not None:
                    self.cache.manifests.put(key, manifest)
                else:
                    self.cache.missing.put(key, True)
        if size is not None:
            blob = Blob(digest, size)
        elif manifest is not None:
            blob = Blob(digest, len(manifest.content), manifest)
        else:
            raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)})
        if pulled and self.events is not None:
            self.events.pulled(pulled_target("blob", repository, digest, BLOB_MEDIA_TYPE, blob.size, None))
        return blob

    async def database_reserve_given_up(self) -> bool:
        """Whether the SQLite database gave up its space reserve on a full disk (`store.reserve`): the room it left
        is for deletes, which uploads would otherwise take (every delete then answered 507). Making it again
        (8 MiB allocated and synced) runs in a thread."""
        reserve = self.store.sync.reserve
        if reserve is None or reserve.present():
            return False
        return await asyncio.to_thread(reserve.given_up)

    def blob_local_path(self, digest: Digest) -> str | None:
        return self.driver.local_path(blob_path(digest))

    async def blob_redirect_url(self, digest: Digest) -> str | None:
        return await self.driver.content_redirect_url(blob_path(digest))

    def blob_stream(self, digest: Digest, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.driver.stream_read(blob_path(digest), offset, length)

    async def delete_blob(self, repository: str, digest: Digest) -> None:
        events = self._events("delete", Target("blob", repository, digest))
        deleted = await self.store.unlink_blob(repository, digest, events)
        self.cache.clear()
        if not deleted:
            raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)})

    async def mount(self, repository: str, digest: Digest, source: str) -> bool:
        """Link a blob `source` already serves into `repository`; False when `source` does not have it."""
        events: list[EventRecord] = []
        if self.events is not None:  # the event names the size: read it first (only when events are recorded)
            size = await self.store.blob_size(source, digest)
            if size is None:
                return False
            events = self._events("mount", _blob_target(repository, digest, size, source))
        mounted = await self.store.mount_blob(repository, digest, source, events)
        if mounted:
            self.cache.clear()
        return mounted

    # --- uploads ---------------------------------------------------------------------------------------------
    async def start_upload(self, repository: str, owner: str | None = None) -> Upload:
        """A new session; `owner` (the authenticated user, None when anonymous) is the only one who may use it."""
        return await self.uploads.start(repository, owner)

    async def upload(self, repository: str, upload_id: str) -> Upload:
        return await self.uploads.get(repository, upload_id)

    async def append_upload(
        self, repository: str, upload_id: str, chunks: AsyncIterable[bytes], start: int | None, arrived: bool = False
    ) -> int:
        """`arrived`: the whole body is received already (see `Uploads.append`)."""
        return await self.uploads.append(repository, upload_id, chunks, start, arrived)

    async def finish_upload(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        chunks: AsyncIterable[bytes] | None,
        start: int | None,
    ) -> None:
        events = self._blob_events("push", repository, digest)
        await self.uploads.complete(repository, upload_id, digest, chunks, start, events)
        self.cache.clear()

    async def put_blob(
        self,
        repository: str,
        digest: Digest,
        chunks: AsyncIterable[bytes],
        upload_id: str | None = None,
        announce: bool = True,
    ) -> None:
        """A monolithic upload: the whole blob in one request, verified before it becomes visible. `upload_id`
        names its data in the upload area (`uploads/<id>/data`), for a pull-through cache whose other requests
        read the growing file; which also stores with `announce=False`: no push event (see `put_manifest`)."""
        events = self._blob_events("push", repository, digest) if announce else None
        await self.uploads.put_whole(repository, digest, chunks, events, upload_id)
        self.cache.clear()

    def blob_pulled(self, repository: str, digest: Digest, size: int) -> None:
        """A pull of a blob served other than by `blob` (a pull-through cache's client reading a fetch under
        way)."""
        if self.events is not None:
            self.events.pulled(pulled_target("blob", repository, digest, BLOB_MEDIA_TYPE, size, None))

    async def cancel_upload(self, upload: Upload) -> None:
        await self.uploads.cancel(upload)
