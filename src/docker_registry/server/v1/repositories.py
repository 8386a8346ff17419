"""Repositories as the v1 API sees them, without HTTP: tags (one namespace with v2's), index images, properties,
deletion and search.

A v1 tag PUT builds the bridge manifest of the image chain and points the v2 tag at it, then records which v1
image that manifest stands for. Whichever API wrote a tag last owns it: a v2 push replaces a v1 tag of the same
name (v1 clients then no longer see it), and a v1 PUT replaces a v2 tag.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import Any

from docker_registry.core.digest import Digest

from ..registry import names, strict_json
from ..registry.service import Registry
from ..store.models import V1Tag
from . import bridge
from .images import TRUSTED, Caller, V1Images, check_image_id
from .presented import NOT_PRESENTABLE, NotLinked, present
from .responses import V1Error

log = logging.getLogger(__name__)

DEFAULT_TAG_JSON = {
    "last_update": None,
    "docker_version": None,
    "docker_go_version": None,
    "arch": "amd64",
    "os": "linux",
    "kernel": None,
}
DESCRIPTION_MAX = 1000
_USER_AGENT_PART = re.compile(r"([^\s/]+)/([^\s/]+)")


def repository_name(name: str) -> str:
    """The repository a v1 path names (see `names.legacy_repository`)."""
    return names.legacy_repository(name)


def check_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise V1Error("Invalid tag name: up to 128 ASCII letters, digits, '_', '.' or '-', not starting with . or -")
    return tag


def tag_json(user_agent: str) -> str:
    """What the original recorded about a tag push, read from the engine's User-Agent."""
    properties: dict[str, Any] = {"last_update": int(time.time())}
    parts = dict(_USER_AGENT_PART.findall(user_agent))
    if "docker" in parts:
        properties["docker_version"] = parts["docker"]
    if "go" in parts:
        properties["docker_go_version"] = parts["go"]
    for key in ("arch", "kernel", "os"):
        if key in parts:
            properties[key] = parts[key].lower()
    return json.dumps(properties)


class V1Repositories:
    def __init__(self, registry: Registry, images: V1Images) -> None:
        self.registry = registry
        self.store = registry.store
        self.images = images
        self._key: bytes | None = None
        """The registry's key for presented images' ids, read once."""

    async def _tags(self, repository: str) -> dict[str, V1Tag]:
        """Every tag of the repository as v1 sees it, v2-pushed manifests presented as v1 chains on first sight
        (recorded, so each manifest is presented once); 404 for an unknown repository."""
        found = await self.store.read(self.store.sync.v1_tags, repository)
        if found is None:
            raise V1Error("Repository not found", 404)
        presented = {
            digest: await self._present(repository, digest)
            for digest in sorted({tag.manifest for tag in found.values() if tag.image_id is None}, key=str)
        }
        return {
            name: dataclasses.replace(tag, image_id=presented[tag.manifest]) if tag.image_id is None else tag
            for name, tag in found.items()
        }

    async def _present(self, repository: str, digest: Digest) -> str:
        """Present a v2 manifest as a v1 chain and record it; its top image id, or `NOT_PRESENTABLE`."""
        if self._key is None:
            self._key = (await self.store.write(self.store.sync.v1_presentation_secret)).encode()
        try:
            chain = await present(self.registry, repository, digest, self._key)
        except NotLinked:
            return NOT_PRESENTABLE  # not now; remembered only once the repository has every blob
        if chain is not None:
            top = await self.store.write(self.store.sync.present_v2_image, digest, chain, chain[0].id)
            if top is not None:
                return top
            log.warning("v1: an image id of %s's chain is another image's: not shown to v1 clients", digest)
            return NOT_PRESENTABLE
        recorded = await self.store.write(self.store.sync.present_v2_image, digest, [], NOT_PRESENTABLE)
        return recorded or NOT_PRESENTABLE

    async def tags(self, repository: str) -> dict[str, str]:
        """Tag to image id: v1 tags, and v2 tags whose image an old engine can pull."""
        found = await self._tags(repository)
        return {name: tag.image_id for name, tag in sorted(found.items()) if tag.image_id}

    async def tag(self, repository: str, tag: str) -> str:
        """The tag's image id."""
        try:
            found = await self._tags(repository)
        except V1Error:
            raise V1Error("Tag not found", 404) from None
        if tag not in found or not found[tag].image_id:
            raise V1Error("Tag not found", 404)
        return str(found[tag].image_id)

    async def tag_json(self, repository: str, tag: str) -> dict[str, Any]:
        """What the tag's v1 push recorded; defaults for a tag v2 wrote, or none."""
        found = await self.store.read(self.store.sync.v1_tags, repository) or {}
        recorded = found[tag].json if tag in found else None
        if recorded is None:
            return dict(DEFAULT_TAG_JSON)
        described: dict[str, Any] = json.loads(recorded)
        return {**DEFAULT_TAG_JSON, **described}

    async def put_tag(self, repository: str, tag: str, image_id: str, described: str, caller: Caller = TRUSTED) -> None:
        """Point the tag at the image (through the bridge manifest of its chain); `described` is the tag's json.
        The caller must be able to read the image: the tag makes the repository hold its chain."""
        check_image_id(image_id)
        if not await self.images.may_read(image_id, caller):
            raise V1Error(f"Access denied to image {image_id}", 403)
        image = await self.images.get(image_id)
        if image is None:
            raise V1Error("Image not found", 404)
        if not image.complete:
            raise V1Error("Image is being uploaded, retry later")
        chain = await self.images.chain(image)
        if not await self.images.may_read_all([each.id for each in chain[1:]], caller):
            raise V1Error(f"Access denied to an ancestor of image {image_id}", 403)
        digest = await bridge.publish(self.registry, repository, tag, chain)
        if not await self.store.write(self.store.sync.put_v1_tag, repository, tag, digest, image_id, described):
            raise V1Error("Image not found (it, or the tag's manifest, was deleted meanwhile)", 404)

    async def delete_tag(self, repository: str, tag: str) -> None:
        """Delete a tag v1 clients see, whichever API wrote it."""
        try:
            visible = await self.tags(repository)
        except V1Error:
            visible = {}
        if tag not in visible:
            raise V1Error(f"Tag not found: {tag}", 404)
        deleted = await self.store.write(self.store.sync.delete_v1_tags, repository, [tag])
        self.registry.cache.clear()
        if not deleted:
            raise V1Error(f"Tag not found: {tag}", 404)

    async def delete_repository(self, repository: str) -> None:
        """The original's repository deletion: the tags v1 clients see (tags of artifacts and of images they cannot
        pull stay), the index images and the properties."""
        try:
            visible = await self.tags(repository)
        except V1Error:
            visible = {}
        deleted = await self.store.write(self.store.sync.delete_v1_repository, repository, sorted(visible))
        self.registry.cache.clear()
        if not deleted:
            raise V1Error("Repository not found", 404)

    async def index_images(self, repository: str) -> list[dict[str, str]]:
        """The index images pushed through v1, and the top image of every tag v1 clients see (a repository pushed
        through v2 has no index images, and engines refuse to pull without this list)."""
        stored = await self.store.read(self.store.sync.v1_index_images, repository) or []
        try:
            tagged = await self.tags(repository)
        except V1Error:
            tagged = {}
        listed = {entry["id"] for entry in stored}
        found = stored + [{"id": image_id} for image_id in sorted(set(tagged.values())) if image_id not in listed]
        if not found:
            raise V1Error("images not found", 404)
        return found

    async def put_index_images(self, repository: str, raw: bytes, caller: Caller = TRUSTED) -> None:
        """Merge the listed images into the repository's index images: those that exist only if the caller may
        read them (`V1Queries.put_v1_index_images`). Another's image is left out silently, as engines list every
        image of a push first: its push then fails where it would read or write that image."""
        try:
            data = strict_json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise V1Error("Error Decoding JSON") from None
        if not isinstance(data, list):
            raise V1Error("Invalid data")
        entries: list[tuple[str, str | None]] = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise V1Error('Invalid data: a list of {"id": ..., "checksum": ...} expected')
            checksum = item.get("checksum")
            if checksum is not None and (not isinstance(checksum, str) or len(checksum) > 200):
                raise V1Error("Invalid checksum")
            entries.append((check_image_id(item["id"]), checksum or None))
        readable = await self._readable([image_id for image_id, _ in entries], caller)
        await self.store.write(self.store.sync.put_v1_index_images, repository, entries, caller.user, readable)

    async def _readable(self, image_ids: list[str], caller: Caller) -> set[str] | None:
        """The images of `image_ids` that exist and the caller may read; None (all of them) without auth. One that
        appears only after this look is not among them: it is someone's the caller was not checked against."""
        if caller.may_pull is None:
            return None
        found = await self.store.read(self.store.sync.v1_images, image_ids)
        return {image_id for image_id in sorted(found) if await self.images.may_read(image_id, caller)}

    async def properties(self, repository: str) -> dict[str, str]:
        """`{"access": ...}`, and the description when one was set."""
        found = await self.store.read(self.store.sync.v1_properties, repository)
        if found is None:
            return {"access": "public"}
        properties, description = found
        return {**properties, "description": description} if description else properties

    async def put_properties(self, repository: str, raw: bytes) -> None:
        """The original's `{"access": "public"|"private"}`, plus (ours) an optional `description` that search
        matches (the original's search index never stored one)."""
        try:
            data = strict_json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            data = None
        if not data or not isinstance(data, dict) or data.get("access") not in ("public", "private"):
            raise V1Error('Invalid data: {"access": "public"} or {"access": "private"} expected')
        description = data.get("description", "")
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX or "\x00" in description:
            raise V1Error(f"Invalid description: text of at most {DESCRIPTION_MAX} characters, no NUL, expected")
        await self.store.write(self.store.sync.put_v1_properties, repository, {"access": data["access"]}, description)

    async def search(self, term: str) -> list[tuple[str, str]]:
        return await self.store.read(self.store.sync.search_repositories, term)
