"""The registry logic: repositories, manifests, tags, blobs, uploads and referrers, with no knowledge of HTTP.

Reads go through per-process caches first; everything touching the database runs in a thread so the event loop
never blocks on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from docker_registry.core.digest import Digest, blob_path
from docker_registry.core.driver import Base

from . import names
from .cache import RegistryCache
from .errors import (
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    RegistryError,
)
from .manifests import Manifest, parse_manifest
from .store.metadata import BadReference, MetadataStore, Referrer, StoredManifest, Upload
from .uploads import Uploads


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    manifest: StoredManifest | None = None
    """Set when the digest names a manifest of the repository: served from the metadata store, as Distribution
    serves manifests from its blob store too."""


def _bad_reference(e: BadReference) -> RegistryError:
    """The error Distribution gives for a missing blob or child; a wrong size is an invalid manifest."""
    if e.stored_size is not None:
        message = f"descriptor of {e.kind} {e.digest} gives size {e.declared_size}, but it has {e.stored_size} bytes"
        return RegistryError(MANIFEST_INVALID, {"digest": e.digest, "size": e.declared_size}, message=message)
    if e.kind == "blob":
        return RegistryError(MANIFEST_BLOB_UNKNOWN, {"digest": e.digest}, message=f"blob unknown: {e.digest}")
    return RegistryError(MANIFEST_UNKNOWN, {"digest": e.digest}, message=f"manifest unknown: {e.digest}", status=400)


class Registry:
    def __init__(self, store: MetadataStore, driver: Base, cache: RegistryCache) -> None:
        self.store = store
        self.driver = driver
        self.cache = cache
        self.uploads = Uploads(store, driver)

    # --- manifests -----------------------------------------------------------------------------------------
    async def resolve(self, repository: str, reference: str) -> str:
        """The manifest digest a tag points to (a digest resolves to itself)."""
        if names.is_digest(reference):
            return reference
        generation = self.cache.refresh()
        digest = self.cache.tags.get((repository, reference))
        if digest is None:
            digest = await asyncio.to_thread(self.store.tag_digest, repository, reference)
            if digest is None:
                raise await self._manifest_unknown(repository, reference)
            if self.cache.generation == generation:
                self.cache.tags.put((repository, reference), digest)
        return digest

    async def get_manifest(self, repository: str, reference: str) -> tuple[str, StoredManifest]:
        digest = await self.resolve(repository, reference)
        # resolve() refreshed already for a tag; the manifest then comes from the same generation
        generation = self.cache.refresh() if names.is_digest(reference) else self.cache.generation
        manifest = self.cache.manifests.get((repository, digest))
        if manifest is None:
            manifest = await asyncio.to_thread(self.store.manifest, repository, digest)
            if manifest is None:
                raise await self._manifest_unknown(repository, reference)
            if self.cache.generation == generation:
                self.cache.manifests.put((repository, digest), manifest)
        return digest, manifest

    async def _manifest_unknown(self, repository: str, reference: str) -> RegistryError:
        if not await asyncio.to_thread(self.store.repository_exists, repository):
            return RegistryError(NAME_UNKNOWN, {"name": repository})
        return RegistryError(MANIFEST_UNKNOWN, {"reference": reference})

    async def put_manifest(self, repository: str, reference: str, raw: bytes, content_type: str) -> Manifest:
        tag = None
        algorithm = "sha256"
        if names.is_digest(reference):
            algorithm = names.check_digest(reference).algorithm
        else:
            tag = reference
        manifest = parse_manifest(raw, content_type, algorithm)
        if tag is None and manifest.digest != reference:
            raise RegistryError(
                DIGEST_INVALID, {"digest": reference, "computed": manifest.digest}, message="manifest digest mismatch"
            )
        try:
            await asyncio.to_thread(self.store.put_manifest, repository, manifest, tag)
        except BadReference as e:
            raise _bad_reference(e) from None
        self.cache.clear()
        return manifest

    async def delete_manifest(self, repository: str, reference: str) -> None:
        if names.is_digest(reference):
            deleted = await asyncio.to_thread(self.store.delete_manifest, repository, reference)
        else:
            deleted = await asyncio.to_thread(self.store.delete_tag, repository, reference)
        self.cache.clear()
        if not deleted:
            raise await self._manifest_unknown(repository, reference)

    # --- tags, catalog, referrers ----------------------------------------------------------------------------
    async def tags(self, repository: str, last: str | None, limit: int | None) -> list[str]:
        tags = await asyncio.to_thread(self.store.tags, repository, last, limit)
        if tags is None:
            raise RegistryError(NAME_UNKNOWN, {"name": repository})
        return tags

    async def catalog(self, last: str | None, limit: int) -> list[str]:
        return await asyncio.to_thread(self.store.repositories, last, limit)

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        return await asyncio.to_thread(self.store.referrers, repository, subject, artifact_type)

    # --- blobs -----------------------------------------------------------------------------------------------
    async def blob(self, repository: str, digest: str) -> Blob:
        """A blob this repository may serve, else BLOB_UNKNOWN."""
        generation = self.cache.refresh()
        size = self.cache.blobs.get((repository, digest))
        if size is not None:
            return Blob(digest, size)
        size = await asyncio.to_thread(self.store.blob_size, repository, digest)
        if size is not None:
            if self.cache.generation == generation:
                self.cache.blobs.put((repository, digest), size)
            return Blob(digest, size)
        manifest = self.cache.manifests.get((repository, digest))
        if manifest is None:
            manifest = await asyncio.to_thread(self.store.manifest, repository, digest)
        if manifest is not None:
            return Blob(digest, len(manifest.content), manifest)
        raise RegistryError(BLOB_UNKNOWN, {"digest": digest})

    def blob_local_path(self, digest: str) -> str | None:
        return self.driver.local_path(blob_path(digest))

    async def blob_redirect_url(self, digest: str) -> str | None:
        return await self.driver.content_redirect_url(blob_path(digest))

    def blob_stream(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.driver.stream_read(blob_path(digest), offset, length)

    async def delete_blob(self, repository: str, digest: str) -> None:
        deleted = await asyncio.to_thread(self.store.unlink_blob, repository, digest)
        self.cache.clear()
        if not deleted:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest})

    async def mount(self, repository: str, digest: str, source: str) -> bool:
        """Link a blob `source` already serves into `repository`; False when `source` does not have it."""
        size = await asyncio.to_thread(self.store.blob_size, source, digest)
        if size is None:
            return False
        await asyncio.to_thread(self.store.link_blob, repository, digest, size)
        self.cache.clear()
        return True

    # --- uploads ---------------------------------------------------------------------------------------------
    async def start_upload(self, repository: str) -> Upload:
        return await self.uploads.start(repository)

    async def upload(self, repository: str, upload_id: str) -> Upload:
        return await self.uploads.get(repository, upload_id)

    async def append_upload(
        self, repository: str, upload_id: str, chunks: AsyncIterable[bytes], start: int | None
    ) -> int:
        return await self.uploads.append(repository, upload_id, chunks, start)

    async def finish_upload(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        chunks: AsyncIterable[bytes] | None,
        start: int | None,
    ) -> None:
        await self.uploads.complete(repository, upload_id, digest, chunks, start)
        self.cache.clear()

    async def put_blob(self, repository: str, digest: Digest, chunks: AsyncIterable[bytes]) -> None:
        """A monolithic upload: the whole blob in one request, verified before it becomes visible."""
        await self.uploads.put_whole(repository, digest, chunks)
        self.cache.clear()

    async def cancel_upload(self, upload: Upload) -> None:
        await self.uploads.cancel(upload)
