"""The v1 image life cycle, without HTTP: json first, then the layer, then the checksum that completes the image.

Layers become blobs of the content-addressed store (by the sha256 of their bytes, computed as they stream in, with
the payload checksum and the diff_id in the same pass), so the v2 API and the bridge serve the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, blob_path
from docker_registry.core.driver import Writer

from ..registry import strict_json
from ..registry.cache import BoundedCache
from ..registry.service import Registry
from ..registry.uploads import PIN_WAIT_SECONDS
from ..store.models import V1Image
from ..store.v1 import PutJson
from . import tarfiles
from .layers import LayerDigests
from .responses import V1Error

IMAGE_ID = re.compile(r"[0-9a-f]{64}|[0-9a-f]{16}")
INLINE_HASH_MAX = 64 * 1024
JSON_MAX_BYTES = 4 * 1024 * 1024
"""The largest image json taken, by a PUT and by an import."""
IN_PROGRESS = "Image is being uploaded, retry later"
COMPLETE_CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a v1 write, for what the auth gate cannot check (it reads no body: a json's parent, a tag's image)
    and for the images they push (`v1_images.pusher`)."""

    user: str | None = None
    """None without auth; `store.v1.ANONYMOUS` for an anonymous caller under auth."""
    may_pull: Callable[[str], bool] | None = None
    """None without auth (and for `import`, run by the registry's operator): everyone may read everything."""


TRUSTED = Caller()


def check_image_id(image_id: str) -> str:
    if not IMAGE_ID.fullmatch(image_id):  # not `$`, which also matches before a final newline
        raise V1Error("Invalid image ID: 64 (or 16) lowercase hexadecimal characters expected", 400)
    return image_id


def _not_found() -> V1Error:
    return V1Error("Image not found", 404)


def parse_image_json(image_id: str, raw: bytes) -> str | None:
    """The parent the json names; refuses what the original refused (and non-UTF-8 or odd ids it let through)."""
    try:
        data = strict_json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise V1Error("Invalid JSON") from None
    if not data or not isinstance(data, dict):
        raise V1Error("Invalid JSON")
    if "id" not in data:
        raise V1Error("Missing key `id' in JSON")
    if data["id"] != image_id:
        raise V1Error("JSON data contains invalid id")
    parent = data.get("parent")
    if parent in (None, ""):
        return None
    if not isinstance(parent, str) or not IMAGE_ID.fullmatch(parent):
        raise V1Error("Invalid parent ID")
    return parent


async def _pump(chunks: AsyncIterable[bytes], writer: Writer, digests: LayerDigests) -> None:
    """Write and hash each chunk while the next one is received: the blob digest in one thread, the payload
    checksum and the diff_id in another, the write in a third; one chunk in flight."""
    pending: list[asyncio.Future[object]] = []
    try:
        async for chunk in chunks:
            if pending:
                await asyncio.gather(*pending)
            if len(chunk) <= INLINE_HASH_MAX:
                digests.update(chunk)
                pending = [asyncio.ensure_future(writer.write(chunk))]
            else:
                pending = [
                    asyncio.ensure_future(asyncio.to_thread(digests.update_blob, chunk)),
                    asyncio.ensure_future(asyncio.to_thread(digests.update_rest, chunk)),
                    asyncio.ensure_future(writer.write(chunk)),
                ]
    finally:  # settle them before the writer is committed or cancelled, even when the body broke off
        if pending:
            results = await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
            for result in results:
                if isinstance(result, BaseException):
                    raise result


class V1Images:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store = registry.store
        self.driver = registry.driver
        self._complete: BoundedCache[str, V1Image] = BoundedCache(COMPLETE_CACHE_ENTRIES)
        """Complete images by id: nothing changes one (json, layer and checksum PUTs answer 409, an import skips
        it), so this process keeps them without asking the database again, until the database changes: garbage
        collection deletes the presented images nothing reaches any more, and every worker of every node must then
        answer 404 for them (the registry's caches' generation, `RegistryCache.refresh`)."""
        self._generation = -1

    async def get(self, image_id: str) -> V1Image | None:
        generation = self.registry.cache.refresh()
        if generation != self._generation:
            self._complete.clear()
            self._generation = generation
        cached = self._complete.get(check_image_id(image_id))
        if cached is not None:
            return cached
        image = await self.store.read(self.store.sync.v1_image, image_id)
        if image is not None and image.complete and self.registry.cache.generation == generation:
            self._complete.put(image_id, image)
        return image

    async def complete(self, image_id: str) -> V1Image:
        """A complete image, else 404 (unknown) or 400 (being pushed), as the original answered reads."""
        image = await self.get(image_id)
        if image is None:
            raise _not_found()
        if not image.complete:
            raise V1Error(IN_PROGRESS)
        return image

    async def may_read(self, image_id: str, caller: Caller) -> bool:
        """Whether the caller, who may push somewhere (they are writing), may read the image
        (`V1Holding.readable_by`); an unknown one is left to what follows (a 404, a parent refused as unknown)."""
        if caller.may_pull is None:
            return True
        holding = await self.store.read(self.store.sync.v1_image_holding, image_id)
        return not holding.found or holding.readable_by(caller.user, caller.may_pull, pushes_somewhere=True)

    async def may_read_all(self, image_ids: Sequence[str], caller: Caller) -> bool:
        """`may_read` of every image of a chain: a tag or a child makes its repository hold the whole chain, so the
        right to read its top (listed in a repository the caller may pull) must not open ancestors they may not."""
        for image_id in image_ids:
            if not await self.may_read(image_id, caller):
                return False
        return True

    async def put_json(self, image_id: str, raw: bytes, caller: Caller) -> None:
        check_image_id(image_id)
        parent = parse_image_json(image_id, raw)
        if parent is not None:  # as the original's validate_parent_access, over the parent's whole chain
            found = await self.get(parent)
            if not await self.may_read_all(found.ancestry if found is not None else [parent], caller):
                raise V1Error("Image depends on an unauthorized parent")
        outcome = await self.store.write(self.store.sync.put_v1_json, image_id, raw, parent, caller.user)
        if outcome is PutJson.EXISTS:
            raise V1Error("Image already exists", 409)
        if outcome is PutJson.NO_PARENT:
            raise V1Error("Image depends on a non existing parent")
        if outcome is PutJson.PARENT_INCOMPLETE:
            raise V1Error("Image depends on a parent that is being pushed: push its layer and checksum first")
        if outcome is PutJson.NOT_YOURS:
            raise V1Error("Image is being pushed by another user", 403)

    async def put_layer(self, image_id: str, chunks: AsyncIterable[bytes], caller: Caller) -> None:
        """Stream the layer into storage, hashing as it comes; it becomes the image's layer blob once all of it
        arrived (a body that breaks off leaves nothing behind), if the image is still the caller's to write."""
        image = await self.get(image_id)
        if image is None:
            raise _not_found()
        if image.complete:
            raise V1Error("Image already exists", 409)
        digests = LayerDigests(image.json)
        scratch = f"uploads/{uuid.uuid4()}/data"
        writer = await self.driver.writer(scratch)
        try:
            await _pump(chunks, writer, digests)
            await writer.commit()
        except BaseException:
            await writer.cancel()
            await self.discard(scratch)
            raise
        digest = digests.blob.digest()
        pin = uuid.uuid4().hex
        try:
            # garbage collection keeps away from the blob from before its file is placed until the image names it
            try:
                await self._pin(digest, writer.size, pin)
            except BaseException:
                await self.discard(scratch)
                raise
            await self.publish(scratch, digest)
            recorded = await self.store.write(
                self.store.sync.put_v1_layer,
                image_id,
                digest,
                writer.size,
                digests.checksum,
                digests.diff_id,
                image.json,
                caller.user,
            )
        finally:
            with contextlib.suppress(Exception):  # else the pin expires on its own
                await self.store.unpin_blob(digest, pin)
        if not recorded:  # completed, or its json pushed again (by another user), while this layer streamed in
            raise V1Error("Image changed while its layer was uploaded; push it again", 409)

    async def _pin(self, digest: Digest, size: int, pin: str) -> None:
        """Pin the blob as a v2 upload does (`Uploads._pin`): without it, a collection could remove the file this
        push finds or places, and the image would name a layer that is gone. While a collection is deleting an
        earlier copy, wait for it; after `PIN_WAIT_SECONDS`, 503 (the layer's bytes are dropped)."""
        deadline = time.monotonic() + PIN_WAIT_SECONDS
        while not await self.store.pin_blob(digest, size, pin):
            if time.monotonic() > deadline:
                raise V1Error("garbage collection is deleting this layer; try again", 503, {"Retry-After": "5"})
            await asyncio.sleep(0.05)

    async def publish(self, scratch: str, digest: Digest) -> None:
        """Move bytes written to `scratch` and hashed to `digest` to the blob's place, unless a copy is there
        already (content-addressed); the scratch area is removed either way."""
        try:
            await self._publish(scratch, digest)
        finally:
            await self.discard(scratch)

    async def _publish(self, scratch: str, digest: Digest) -> None:
        try:
            await self.driver.stat(blob_path(digest))
            if await self.store.known_blob_size(digest) is not None:
                return
        except exceptions.FileNotFoundError:
            pass
        await self.driver.move(scratch, blob_path(digest))

    async def discard(self, scratch: str) -> None:
        """Remove a scratch area (bytes received or copied that do not become a blob)."""
        try:
            await self.driver.remove(scratch.rpartition("/")[0])
        except exceptions.FileNotFoundError:
            pass

    async def put_checksum(self, image_id: str, checksum: str) -> None:
        image = await self.get(image_id)
        if image is None:
            raise _not_found()
        if image.complete:
            raise V1Error("Cannot set this image checksum", 409)
        if image.layer_digest is None:
            raise V1Error("Image layer not uploaded yet: send the layer before its checksum")
        if checksum != image.checksum:
            raise V1Error("Checksum mismatch")
        if not await self.store.write(self.store.sync.complete_v1_image, image_id, checksum):
            raise V1Error("Image changed while its checksum was checked; push it again", 409)

    async def chain(self, image: V1Image) -> list[V1Image]:
        """The image and its ancestors (top first), each complete, each with its diff_id (which only a layer whose
        compressed stream is broken lacks: such an image cannot be bridged to v2, so it cannot be tagged)."""
        found = await self.store.read(self.store.sync.v1_images, image.ancestry)
        chain = []
        for image_id in image.ancestry:
            ancestor = found.get(image_id)
            if ancestor is None or not ancestor.complete or ancestor.layer_digest is None:
                raise V1Error(f"Image {image_id} of the ancestry is not complete")
            if ancestor.diff_id is None:
                raise V1Error(f"Layer of image {image_id} is not a valid compressed tar (gzip, xz or bzip2)")
            chain.append(ancestor)
        return chain

    async def files(self, image: V1Image) -> list[list[Any]]:
        """The layer's file listing (see `tarfiles`); 400 if the layer is no tar."""
        assert image.layer_digest is not None
        try:
            return await tarfiles.file_listing(aiter(self.layer_stream(image.layer_digest)))
        except tarfiles.NotATar as e:
            raise V1Error(f"Layer of image {image.id} is not a tar: {e}") from None
        except exceptions.FileNotFoundError:
            raise V1Error("Image layer missing from storage", 404) from None

    def layer_stream(self, digest: Digest, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.driver.stream_read(blob_path(digest), offset, length)
