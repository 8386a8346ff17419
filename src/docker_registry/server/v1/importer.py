"""`docker-registry import CONFIG --v1 PATH`: an original registry's storage tree read into this one.

The tree is the original's layout: `images/<id>/json`, `layer`, `ancestry`, `_checksum`, `_inprogress`, `_files`,
and `repositories/<namespace>/<repo>/tag_<name>`, `tag<name>_json`, `_index_images`, `json`, `_private` or
`properties`. Images are imported parents first; each layer is read once, hashed (blob digest, payload checksum,
diff_id) and becomes a content-addressed blob: hard-linked in place when PATH lies inside the filesystem storage's
root directory (its bytes stay where they are, PATH is not modified), copied otherwise. Half-pushed images (a push
in progress, no `_checksum`, no layer, no sha256 payload checksum that the layer matches, a half-pushed parent) are
imported as incomplete, never served, and reported. Tags of complete images get their bridge manifests, as a v1 tag
PUT does.

The tree is read as untrusted data: a symlink is followed only within PATH, only regular files are read (metadata
files up to an image json PUT's limit), and json is read as strictly as the API reads it; what fails is reported
and skipped, never served.

Running it again changes nothing: complete images and tags already pointing at their image are skipped unread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from tqdm import tqdm

from docker_registry.core.digest import Digest

from ..registry import names, strict_json
from ..registry.errors import RegistryError
from ..registry.service import Registry
from ..store.models import V1Image, V1Tag
from .images import IMAGE_ID, JSON_MAX_BYTES, V1Images
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
    folders_skipped: list[tuple[str, str]] = field(default_factory=list)
    """(folder, why) of folders that could not be listed."""

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
        for folder, why in self.folders_skipped:
            yield f"  folder {folder} skipped: {why}"


@dataclass
class _Found:
    """What the tree holds for one image."""

    id: str
    directory: str
    json: bytes | None
    parent: str | None
    problem: str | None
    in_progress: bool = False
    checksums: list[str] | None = None
    """What `_checksum` records; None without one."""


class _Refused(Exception):
    """A file or directory of the tree that is not read; the message says which and why, for the summary."""


def _resolve(root: str, path: str, within: str | None = None) -> str:
    """`path` with its symlinks resolved, refused when that leads outside `within` (by default `root`, PATH): a
    symlink out of the tree (to another user's file, to the registry's own database) would import, and serve,
    whatever it names. Within the tree a symlink is followed, as trees that share one layer between images by
    relative symlinks need."""
    real, bound = os.path.realpath(path), within or root
    if os.path.commonpath([bound, real]) != bound:
        where = "PATH" if bound == root else f"PATH/{os.path.relpath(bound, root)}"
        raise _Refused(f"{os.path.relpath(path, root)} leads outside {where} (to {real})")
    return real


def _open(root: str, path: str) -> BinaryIO | None:
    """The regular file `path` names (resolved within `root`), None when there is none. Anything else is refused,
    unread: a FIFO would block the import forever, a device read without end. Not following a symlink at the last
    step, nor blocking, makes what is opened the file that was checked."""
    real = _resolve(root, path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _Refused(f"{os.path.relpath(path, root)} cannot be read: {e.strerror}") from None
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise _Refused(f"{os.path.relpath(path, root)} is not a regular file")
    return file


def _read(root: str, path: str) -> bytes | None:
    """A metadata file's bytes (json, `_checksum`, a tag), None when there is none; refused past `JSON_MAX_BYTES`,
    the largest image json the API takes."""
    file = _open(root, path)
    if file is None:
        return None
    with file:
        raw = file.read(JSON_MAX_BYTES + 1)
    if len(raw) > JSON_MAX_BYTES:
        raise _Refused(f"{os.path.relpath(path, root)} is larger than {JSON_MAX_BYTES} bytes")
    return raw


def _scan_image(root: str, directory: str, image_id: str) -> _Found:
    """What the tree holds for the image; a json or `_checksum` that cannot be taken leaves it out, reported."""
    try:
        raw = _read(root, os.path.join(directory, "json"))
        checksums = _recorded_checksums(root, directory)
    except _Refused as e:
        return _Found(image_id, directory, None, None, str(e))
    if raw is None:
        return _Found(image_id, directory, None, None, "no json")
    try:
        document = strict_json.loads(raw)
    except ValueError as e:  # NaN, 1e400, a lone surrogate: served back, no client could read it
        return _Found(image_id, directory, None, None, f"json is not valid JSON: {e}")
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
        in_progress=os.path.lexists(os.path.join(directory, "_inprogress")),
        checksums=checksums,
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


def _recorded_checksums(root: str, directory: str) -> list[str] | None:
    """The checksums `_checksum` records (a JSON list or string, or the oldest trees' plain text), None without
    one; JSON that cannot be read is refused rather than taken for plain text."""
    raw = _read(root, os.path.join(directory, "_checksum"))
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace").strip()
    try:
        value = strict_json.loads(text.encode())
    except ValueError as e:
        if text.startswith(("[", "{", '"')):
            raise _Refused(f"_checksum is not valid JSON: {e}") from None
        return [text]  # the original's oldest trees: a plain string
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _unverified(image: _Found, checksum: str) -> str | None:
    """Why the layer read is not known to be the one pushed, or None. Only a sha256 payload checksum can be checked
    (a tarsum, what engines before 0.10 sent, is not computed here, and a checksum PUT refuses one alone): without
    one that matches, whatever `_checksum` holds (nothing, an object, a tarsum of a since truncated layer), the
    image stays incomplete."""
    if image.in_progress:
        return "push in progress (_inprogress mark)"
    if image.checksums is None:
        return "no _checksum"
    payload = [c for c in image.checksums if c.startswith("sha256:")]
    if not payload:
        return "_checksum holds no sha256 payload checksum (a tarsum alone cannot be verified)"
    if checksum not in payload:
        return "layer does not match its _checksum"
    return None


def _hash_file(layer: BinaryIO, digests: LayerDigests) -> int:
    size = 0
    while chunk := layer.read(READ_SIZE):
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


def _link(layer: BinaryIO, source: str, target: str) -> bool:
    """Hard-link the layer file (`source`, resolved, opened as `layer` and hashed) to its blob path; False when the
    filesystem cannot (then it is copied), or when `source` is no longer the file that was hashed (replaced
    meanwhile): a blob is the bytes its digest names, never a symlink nor another file."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return True
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    linked, hashed = os.lstat(target), os.fstat(layer.fileno())
    if (linked.st_dev, linked.st_ino) != (hashed.st_dev, hashed.st_ino):
        os.unlink(target)
        return False
    return True


class V1Importer:
    def __init__(self, registry: Registry, source: str, in_place: bool, progress: bool) -> None:
        self.registry = registry
        self.store = registry.store
        self.images = V1Images(registry)
        self.repositories = V1Repositories(registry, self.images)
        self.source = os.path.realpath(source)
        """PATH with its symlinks resolved, as `_resolve` compares it with what the tree's paths resolve to."""
        self.images_root = os.path.join(self.source, "images")
        self.summary = Summary(self.source, in_place)
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

    def _folders(self, path: str) -> list[os.DirEntry[str]]:
        """The folders in `path`, by name; none, reported, when it cannot be listed (no permission, a loop of
        symbolic links): the rest of the tree is still imported."""
        try:
            with os.scandir(path) as entries:
                return sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
        except OSError as e:
            self.summary.folders_skipped.append((os.path.relpath(path, self.source), e.strerror or str(e)))
            return []

    def _scan_images(self) -> dict[str, _Found]:
        if not os.path.isdir(self.images_root):
            return {}
        return {
            entry.name: _scan_image(self.source, entry.path, entry.name)
            for entry in self._folders(self.images_root)
            if IMAGE_ID.fullmatch(entry.name)
        }

    def _scan_repositories(self) -> list[tuple[str, str]]:
        root = os.path.join(self.source, "repositories")
        if not os.path.isdir(root):
            return []
        return [
            (f"{namespace.name}/{repo.name}", repo.path)
            for namespace in self._folders(root)
            for repo in self._folders(namespace.path)
        ]

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
        """(why the image is half-pushed or None, its layer's digest, size, payload checksum and diff_id). Only a
        layer its `_checksum` verifies becomes a blob: an unverified file (a push cut short, or whatever a hostile
        tree's symlink names, up to the registry's own database when PATH is the storage root) is never linked nor
        copied into the blob store. A layer is read only from the tree's `images` folder, where the original kept
        them."""
        assert image.json is not None
        try:
            path = _resolve(self.source, os.path.join(image.directory, "layer"), self.images_root)
            layer = _open(self.source, path)
        except _Refused as e:
            return str(e), None
        if layer is None:
            return "no layer", None
        with layer:
            if self.summary.in_place:
                why, stored = await self._link_in_place(image, layer, path)
                if why is not None or stored is not None:
                    return why, stored
                layer.seek(0)  # the filesystem cannot link it: copied, as from another disk
            return await self._copy(image, layer)

    async def _link_in_place(
        self, image: _Found, layer: BinaryIO, path: str
    ) -> tuple[str | None, tuple[Digest, int, str, Digest | None] | None]:
        """Hash the layer, then hard-link it as its blob if it is verified; (None, None) when the filesystem cannot
        link it (then it is copied)."""
        assert image.json is not None
        digests = LayerDigests(image.json)
        size = await asyncio.to_thread(_hash_file, layer, digests)
        why = _unverified(image, digests.checksum)
        if why is not None:
            return why, None
        target = self.registry.blob_local_path(digests.blob.digest())
        assert target is not None  # in place only on the filesystem driver
        if not await asyncio.to_thread(_link, layer, path, target):
            return None, None
        self.summary.layers_linked += 1
        return None, (digests.blob.digest(), size, digests.checksum, digests.diff_id)

    async def _copy(
        self, image: _Found, layer: BinaryIO
    ) -> tuple[str | None, tuple[Digest, int, str, Digest | None] | None]:
        """Copy the layer into the upload area, hashing as it goes, and publish it as its blob if it is verified
        (else the copy is dropped): one read of the layer."""
        assert image.json is not None
        digests = LayerDigests(image.json)
        scratch = f"uploads/{uuid.uuid4()}/data"
        writer = await self.registry.driver.writer(scratch)
        try:
            while chunk := await asyncio.to_thread(layer.read, READ_SIZE):
                await asyncio.to_thread(digests.update, chunk)
                await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await writer.cancel()
            raise
        why = _unverified(image, digests.checksum)
        if why is not None:
            await self.images.discard(scratch)
            return why, None
        await self.images.publish(scratch, digests.blob.digest())
        self.summary.layers_copied += 1
        return None, (digests.blob.digest(), writer.size, digests.checksum, digests.diff_id)

    async def _repository(self, repository: str, directory: str) -> None:
        try:
            repository = names.check_name(repository)
        except RegistryError:
            self.summary.tags_skipped.append((repository, "*", "invalid repository name"))
            return
        try:
            directory = _resolve(self.source, directory)
        except _Refused as e:
            self.summary.tags_skipped.append((repository, "*", str(e)))
            return
        try:
            files = await asyncio.to_thread(os.listdir, directory)
        except OSError as e:
            self.summary.tags_skipped.append((repository, "*", f"its folder cannot be listed: {e.strerror or e}"))
            return
        self.summary.repositories += 1
        try:
            index = _read(self.source, os.path.join(directory, "_index_images"))
            if index is not None:
                await self.repositories.put_index_images(repository, index)
        except _Refused as e:
            self.summary.tags_skipped.append((repository, "_index_images", str(e)))
        except V1Error as e:
            self.summary.tags_skipped.append((repository, "_index_images", e.message))
        if "_private" in files:
            await self.store.write(self.store.sync.put_v1_properties, repository, {"access": "private"})
        current = await self.store.read(self.store.sync.v1_tags, repository) or {}
        for name in sorted(f for f in files if f.startswith("tag_")):
            await self._tag(repository, directory, name.removeprefix("tag_"), current)

    async def _tag(self, repository: str, directory: str, tag: str, current: dict[str, V1Tag]) -> None:
        try:
            await self._import_tag(repository, directory, tag, current)
        except _Refused as e:
            self.summary.tags_skipped.append((repository, tag, str(e)))
        except V1Error as e:
            self.summary.tags_skipped.append((repository, tag, e.message))
        except RegistryError as e:  # its bridge manifest refused: a layer being garbage collected, a bad reference
            self.summary.tags_skipped.append((repository, tag, e.message))

    async def _import_tag(self, repository: str, directory: str, tag: str, current: dict[str, V1Tag]) -> None:
        raw = _read(self.source, os.path.join(directory, f"tag_{tag}")) or b""
        image_id = raw.decode("utf-8", "replace").strip().strip('"')
        if tag in current and current[tag].image_id == image_id:
            self.summary.tags_present += 1
            return
        described = _read(self.source, os.path.join(directory, f"tag{tag}_json")) or b"{}"
        check_tag(tag)
        try:
            strict_json.loads(described)
        except ValueError as e:  # NaN, a lone surrogate: served back, no client could read it
            raise V1Error(f"its json is not valid JSON: {e}") from None
        await self.repositories.put_tag(repository, tag, image_id, described.decode("utf-8"))
        self.summary.tags_imported += 1
