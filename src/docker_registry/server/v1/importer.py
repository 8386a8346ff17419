"""`docker-registry import CONFIG --v1 PATH`: an original registry's storage tree read into this one.

The tree is the original's layout: `images/<id>/json`, `layer`, `ancestry`, `_checksum`, `_inprogress`, `_files`,
and `repositories/<namespace>/<repo>/tag_<name>`, `tag<name>_json`, `_index_images`, `json`, `_private` or
`properties`. Images are imported parents first; each layer is read once, hashed (blob digest, payload checksum,
diff_id) and becomes a content-addressed blob: hard-linked in place when PATH lies inside the filesystem storage's
root directory (its bytes stay where they are, PATH is not modified), copied otherwise. Half-pushed images (a push
in progress, no `_checksum`, no layer, a checksum that does not match, a half-pushed parent) are imported as
incomplete, never served, and reported. Tags of complete images get their bridge manifests, as a v1 tag PUT does.

Running it again changes nothing: complete images and tags already pointing at their image are skipped unread.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from docker_registry.core.digest import Digest

from ..registry import names
from ..registry.errors import RegistryError
from ..registry.service import Registry
from ..store.models import V1Image, V1Tag
from .images import IMAGE_ID, V1Images
from .layers import LayerDigests
from .repositories import V1Repositories, check_tag
from .responses import V1Error

READ_SIZE = 1024 * 1024


@dataclass
class Summary:
    source: str
    in_place: bool
    images_imported: int = 0
    images_present: int = 0
    layers_linked: int = 0
    layers_copied: int = 0
    half_pushed: list[tuple[str, str]] = field(default_factory=list)
    """(image id, why) of images imported incomplete or not at all."""
    repositories: int = 0
    tags_imported: int = 0
    tags_present: int = 0
    tags_skipped: list[tuple[str, str, str]] = field(default_factory=list)
    """(repository, tag, why)."""

    def lines(self) -> Iterator[str]:
        mode = "in place (layers hard-linked)" if self.in_place else "copied"
        yield f"v1 import of {self.source}, {mode}:"
        yield (
            f"  images: {self.images_imported} imported, {self.images_present} already present, "
            f"{len(self.half_pushed)} half-pushed (kept incomplete, never served)"
        )
        yield f"  layers: {self.layers_linked} linked in place, {self.layers_copied} copied"
        yield f"  repositories: {self.repositories}; tags: {self.tags_imported} imported, {self.tags_present} present"
        for image_id, why in self.half_pushed:
            yield f"  half-pushed image {image_id}: {why}"
        for repository, tag, why in self.tags_skipped:
            yield f"  tag {repository}:{tag} skipped: {why}"


@dataclass
class _Found:
    """What the tree holds for one image."""

    id: str
    directory: str
    json: bytes | None
    parent: str | None
    problem: str | None
    has_layer: bool = False
    in_progress: bool = False
    checksums: list[str] | None = None
    """What `_checksum` records; None without one."""


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _scan_image(directory: str, image_id: str) -> _Found:
    raw = _read(os.path.join(directory, "json"))
    if raw is None:
        return _Found(image_id, directory, None, None, "no json")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _Found(image_id, directory, None, None, "json is not valid JSON")
    if not isinstance(document, dict) or document.get("id") != image_id:
        return _Found(image_id, directory, None, None, "json does not name this image")
    parent = document.get("parent") or None
    if parent is not None and (not isinstance(parent, str) or not IMAGE_ID.fullmatch(parent)):
        return _Found(image_id, directory, None, None, "json names an invalid parent")
    return _Found(
        image_id,
        directory,
        raw,
        parent,
        None,
        has_layer=os.path.isfile(os.path.join(directory, "layer")),
        in_progress=os.path.exists(os.path.join(directory, "_inprogress")),
        checksums=_recorded_checksums(directory),
    )


def _parents_first(found: dict[str, _Found]) -> list[_Found]:
    depth: dict[str, int] = {}

    def depth_of(image_id: str) -> int:
        chain = []
        current: str | None = image_id
        while current is not None and current in found and current not in depth and current not in chain:
            chain.append(current)
            current = found[current].parent
        base = depth.get(current, 0) if current is not None else 0
        for offset, each in enumerate(reversed(chain), start=1):
            depth[each] = base + offset
        return depth.get(image_id, 0)

    return sorted(found.values(), key=lambda f: (depth_of(f.id), f.id))


def _recorded_checksums(directory: str) -> list[str] | None:
    raw = _read(os.path.join(directory, "_checksum"))
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return [text]  # the original's oldest trees: a plain string
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _hash_file(path: str, digests: LayerDigests) -> int:
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            digests.update(chunk)
            size += len(chunk)
    return size


def _terminal_size() -> tuple[int, int]:
    """The terminal's columns and lines; one that reports no size (0x0, as a fresh `docker exec -t` may) counts as
    80x24, where tqdm would draw nothing."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


def _link(source: str, target: str) -> bool:
    """Hard-link the layer file to its blob path; False when the filesystem cannot (then it is copied)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    return True


class V1Importer:
    def __init__(self, registry: Registry, source: str, in_place: bool, progress: bool) -> None:
        self.registry = registry
        self.store = registry.store
        self.images = V1Images(registry)
        self.repositories = V1Repositories(registry, self.images)
        self.source = source
        self.summary = Summary(source, in_place)
        self.progress = progress

    async def run(self) -> Summary:
        found = await asyncio.to_thread(self._scan_images)
        repositories = await asyncio.to_thread(self._scan_repositories)
        columns, lines = _terminal_size()
        with tqdm(
            total=len(found) + len(repositories),
            unit="item",
            disable=not self.progress,
            file=sys.stderr,
            ncols=columns,
            nrows=lines,
        ) as bar:
            complete: dict[str, bool] = {}
            for image in _parents_first(found):
                bar.set_description(f"image {image.id[:12]}")
                complete[image.id] = await self._image(image, found, complete)
                bar.update()
            for repository, directory in repositories:
                bar.set_description(repository)
                await self._repository(repository, directory)
                bar.update()
        return self.summary

    def _scan_images(self) -> dict[str, _Found]:
        root = os.path.join(self.source, "images")
        if not os.path.isdir(root):
            return {}
        found = {}
        for entry in os.scandir(root):
            if entry.is_dir() and IMAGE_ID.fullmatch(entry.name):
                found[entry.name] = _scan_image(entry.path, entry.name)
        return found

    def _scan_repositories(self) -> list[tuple[str, str]]:
        root = os.path.join(self.source, "repositories")
        if not os.path.isdir(root):
            return []
        found = []
        for namespace in sorted(os.scandir(root), key=lambda e: e.name):
            if namespace.is_dir():
                found += [
                    (f"{namespace.name}/{repo.name}", repo.path)
                    for repo in sorted(os.scandir(namespace.path), key=lambda e: e.name)
                    if repo.is_dir()
                ]
        return found

    def _half(self, image_id: str, why: str) -> bool:
        self.summary.half_pushed.append((image_id, why))
        return False

    async def _image(self, image: _Found, found: dict[str, _Found], complete: dict[str, bool]) -> bool:
        """Import one image; whether it is complete (in the store, now or before)."""
        existing = await self.store.read(self.store.sync.v1_image, image.id)
        if existing is not None and existing.complete:
            self.summary.images_present += 1
            return True
        if image.json is None:
            return self._half(image.id, image.problem or "no json")
        ancestry = [image.id]
        parent_complete = True
        if image.parent is not None:
            parent = await self.store.read(self.store.sync.v1_image, image.parent)
            if parent is None:
                return self._half(image.id, f"parent {image.parent} is missing")
            ancestry += parent.ancestry
            parent_complete = parent.complete and complete.get(image.parent, True)
        why, layer = await self._layer(image)
        if why is None and not parent_complete:
            why = f"parent {image.parent} is half-pushed"
        digest, size, checksum, diff_id = layer if layer is not None else (None, None, None, None)
        record = V1Image(image.id, image.json, image.parent, ancestry, digest, size, checksum, diff_id, why is None)
        if await self.store.write(self.store.sync.import_v1_image, record):
            self.summary.images_imported += 1
        if why is not None:
            return self._half(image.id, why)
        return True

    async def _layer(self, image: _Found) -> tuple[str | None, tuple[Digest, int, str, Digest | None] | None]:
        """(why the image is half-pushed or None, its layer's digest, size, payload checksum and diff_id)."""
        assert image.json is not None
        path = os.path.join(image.directory, "layer")
        if not image.has_layer:
            return "no layer", None
        digests = LayerDigests(image.json)
        if self.summary.in_place:
            size = await asyncio.to_thread(_hash_file, path, digests)
            target = self.registry.blob_local_path(digests.blob.digest())
            assert target is not None  # in place only on the filesystem driver
            if await asyncio.to_thread(_link, path, target):
                self.summary.layers_linked += 1
            else:
                size = await self._copy(path, LayerDigests(image.json))
        else:
            size = await self._copy(path, digests)
        layer = (digests.blob.digest(), size, digests.checksum, digests.diff_id)
        if image.in_progress:
            return "push in progress (_inprogress mark)", layer
        recorded = image.checksums
        if recorded is None:
            return "no _checksum", layer
        payload = [c for c in recorded if c.startswith("sha256:")]
        if payload and digests.checksum not in payload:
            return "layer does not match its _checksum", layer
        return None, layer

    async def _copy(self, path: str, digests: LayerDigests) -> int:
        """Copy the layer into storage as a blob, hashing as it goes; its size."""
        driver = self.registry.driver
        scratch = f"uploads/{uuid.uuid4()}/data"
        writer = await driver.writer(scratch)
        try:
            with open(path, "rb") as source:  # noqa: ASYNC230  (reads run in threads below)
                while chunk := await asyncio.to_thread(source.read, READ_SIZE):
                    await asyncio.to_thread(digests.update, chunk)
                    await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await writer.cancel()
            raise
        await self.images.publish(scratch, digests.blob.digest())
        self.summary.layers_copied += 1
        return writer.size

    async def _repository(self, repository: str, directory: str) -> None:
        try:
            repository = names.check_name(repository)
        except RegistryError:
            self.summary.tags_skipped.append((repository, "*", "invalid repository name"))
            return
        self.summary.repositories += 1
        files = await asyncio.to_thread(os.listdir, directory)
        index = _read(os.path.join(directory, "_index_images"))
        if index is not None:
            try:
                await self.repositories.put_index_images(repository, index)
            except V1Error as e:
                self.summary.tags_skipped.append((repository, "_index_images", e.message))
        if "_private" in files:
            await self.store.write(self.store.sync.put_v1_properties, repository, {"access": "private"})
        current = await self.store.read(self.store.sync.v1_tags, repository) or {}
        for name in sorted(f for f in files if f.startswith("tag_")):
            await self._tag(repository, directory, name.removeprefix("tag_"), current)

    async def _tag(self, repository: str, directory: str, tag: str, current: dict[str, V1Tag]) -> None:
        raw = _read(os.path.join(directory, f"tag_{tag}")) or b""
        image_id = raw.decode("utf-8", "replace").strip().strip('"')
        if tag in current and current[tag].image_id == image_id:
            self.summary.tags_present += 1
            return
        described = (_read(os.path.join(directory, f"tag{tag}_json")) or b"{}").decode("utf-8", "replace")
        try:
            check_tag(tag)
            json.loads(described)
            await self.repositories.put_tag(repository, tag, image_id, described)
        except V1Error as e:
            self.summary.tags_skipped.append((repository, tag, e.message))
        except ValueError:
            self.summary.tags_skipped.append((repository, tag, "its json is not valid JSON"))
        else:
            self.summary.tags_imported += 1
