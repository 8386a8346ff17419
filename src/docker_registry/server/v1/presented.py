"""What a v1 client sees of a v2-pushed image: a v1 image chain, one image per layer, made from the manifest and its
config, so docker 1.x engines pull what today's clients push.

Only what an old engine can unpack is presented: a Docker schema 2 or OCI image manifest (of an index, the
linux/amd64 image, else the first linux one) whose layers are tars, plain or gzip, and whose config gives one diff_id
per layer. Image ids are derived from the content (parent id, layer digest, diff_id; the top one also from the
config digest), so chains of images sharing base layers share their base images, and presenting again yields the
same ids. They are keyed with a secret of the registry, so that only who may read a chain learns its ids: an id
opens its image (anyone holding one may list it as their own repository's image, as with the original's index). The
chain has no payload checksum (that would mean reading every layer), which engines do not check on pull.
Manifests that cannot be presented are remembered as such (an empty id) and stay invisible to v1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, DigestError, blob_path, parse_digest

from ..registry import strict_json
from ..registry.errors import RegistryError
from ..registry.manifests import IMAGE_TYPES, INDEX_TYPES
from ..registry.service import Registry
from ..store.models import V1Image

TAR_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    }
)
CONFIG_MAX_BYTES = 4 * 1024 * 1024
NOT_PRESENTABLE = ""
"""The image id recorded for a manifest v1 clients cannot use (an artifact, zstd layers, another platform only)."""


class NotPresentable(Exception):
    """The manifest is no image a docker 1.x engine could pull."""


class NotLinked(Exception):
    """The repository does not link a blob the manifest names (a cached manifest whose blobs were not pulled yet):
    not presented now, and not remembered as unpresentable either."""


def _document(content: bytes) -> dict[str, Any]:
    try:
        document = strict_json.loads(content)  # deep nesting, NaN: nothing a docker 1.x engine could read back
    except ValueError:
        raise NotPresentable from None
    if not isinstance(document, dict):
        raise NotPresentable
    return document


def _digest(value: object) -> Digest:
    if not isinstance(value, str):
        raise NotPresentable
    try:
        return parse_digest(value)
    except DigestError:
        raise NotPresentable from None


def _platform_child(index: dict[str, Any]) -> Digest:
    children = [c for c in index.get("manifests") or [] if isinstance(c, dict)]
    linux = [c for c in children if _platform(c).get("os") == "linux"]
    amd64 = [c for c in linux if _platform(c).get("architecture") == "amd64"]
    candidates = amd64 or linux
    if not candidates:
        raise NotPresentable
    return _digest(candidates[0].get("digest"))


def _platform(entry: dict[str, Any]) -> dict[str, Any]:
    """An index entry's platform; an empty one when it has none, or one that is no object (pushed before pushes
    were checked for it)."""
    platform = entry.get("platform")
    return platform if isinstance(platform, dict) else {}


async def _image_manifest(registry: Registry, repository: str, digest: Digest) -> dict[str, Any]:
    """The image manifest to present: the manifest, or an index's platform child. Reading them is no pull (no
    event); a child the repository lacks (a cached index whose amd64 image was not pulled yet, a child deleted and
    pushed again) may be there later, so it is `NotLinked`, not remembered."""
    try:
        _, stored = await registry.get_manifest(repository, digest, pulled=False)
    except RegistryError:
        raise NotPresentable from None
    if stored.media_type in INDEX_TYPES:
        child = _platform_child(_document(stored.content))
        try:
            _, stored = await registry.get_manifest(repository, child, pulled=False)
        except RegistryError:
            raise NotLinked from None
    if stored.media_type not in IMAGE_TYPES:
        raise NotPresentable
    return _document(stored.content)


async def _linked(registry: Registry, repository: str, descriptor: dict[str, Any]) -> tuple[Digest, int]:
    """The digest and size of a blob the repository links, as the descriptor gives them. Blobs are global and v1
    images belong to no repository, so a chain may only name what the repository itself serves: a foreign layer
    (`urls`) or a cached manifest's claim would otherwise make another repository's blob readable, and linkable,
    through an image id."""
    if "urls" in descriptor:
        raise NotPresentable  # stored elsewhere, by definition: nothing of it is here to serve
    digest, size = _digest(descriptor.get("digest")), descriptor.get("size")
    if not isinstance(size, int):
        raise NotPresentable
    stored = await registry.store.read(registry.store.sync.blob_size, repository, digest)
    if stored is None:
        raise NotLinked
    if stored != size:
        raise NotPresentable
    return digest, size


async def _config(registry: Registry, repository: str, descriptor: object) -> tuple[Digest, dict[str, Any]]:
    if not isinstance(descriptor, dict):
        raise NotPresentable
    digest, size = await _linked(registry, repository, descriptor)
    if size > CONFIG_MAX_BYTES:
        raise NotPresentable
    try:
        return digest, _document(await registry.driver.get_content(blob_path(digest)))
    except exceptions.FileNotFoundError:
        raise NotPresentable from None


def _shown_history(history: dict[str, Any]) -> dict[str, str]:
    """What `_image_json` takes from a history entry."""
    return {key: history[key] for key in ("created", "created_by") if isinstance(history.get(key), str)}


def _image_json(
    image_id: str, parent: str | None, size: int, history: dict[str, Any], config: dict[str, Any] | None
) -> bytes:
    """The v1 json of one image of the chain; the top one (`config` given) carries the image's configuration."""
    document: dict[str, Any] = {}
    if config is not None:
        document.update({key: value for key, value in config.items() if key not in ("rootfs", "history")})
    document["id"] = image_id
    if parent is not None:
        document["parent"] = parent
    if isinstance(history.get("created"), str):
        document["created"] = history["created"]
    elif config is not None and isinstance(config.get("created"), str):
        document["created"] = config["created"]
    if isinstance(history.get("created_by"), str):
        document["container_config"] = {"Cmd": ["/bin/sh", "-c", history["created_by"]]}
    document.setdefault("architecture", "amd64")
    document.setdefault("os", "linux")
    document["Size"] = size
    return json.dumps(document, sort_keys=True).encode()


async def present(registry: Registry, repository: str, manifest: Digest, key: bytes) -> list[V1Image] | None:
    """The v1 chain (top first) of a v2 manifest of the repository; None if v1 clients cannot use it. Ids are
    hashes keyed with `key` (the registry's, `store.v1_presentation_secret`). `NotLinked` when the repository lacks
    a blob the manifest names: it may be presentable later."""
    try:
        document = await _image_manifest(registry, repository, manifest)
        config_digest, config = await _config(registry, repository, document.get("config"))
        layers = document.get("layers")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(layers, list) or not layers or not isinstance(diff_ids, list):
            raise NotPresentable
        if len(diff_ids) != len(layers):
            raise NotPresentable
        listed = config.get("history")
        history = [
            h for h in (listed if isinstance(listed, list) else []) if isinstance(h, dict) and not h.get("empty_layer")
        ]
        history += [{}] * (len(layers) - len(history))
        chain: list[V1Image] = []
        parent: str | None = None
        ancestry: list[str] = []
        for number, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
            if not isinstance(layer, dict) or layer.get("mediaType") not in TAR_LAYERS:
                raise NotPresentable
            uncompressed = _digest(diff_id)
            layer_digest, size = await _linked(registry, repository, layer)
            top = number == len(layers) - 1
            # what the image's json shows is part of its id: the top's configuration, a lower image's history
            # entry (two images sharing layers but not their history were one image, whose json showed the first
            # presenter's commands to v1 clients of every other: a leak, and a spoof; probe)
            shown = config_digest if top else json.dumps(_shown_history(history[number]), sort_keys=True)
            seed = f"{parent or ''}\n{layer_digest}\n{uncompressed}\n{shown}"
            image_id = hmac.new(key, seed.encode(), hashlib.sha256).hexdigest()
            ancestry = [image_id, *ancestry]
            raw = _image_json(image_id, parent, size, history[number], config if top else None)
            chain.append(V1Image(image_id, raw, parent, ancestry, layer_digest, size, None, uncompressed, True))
            parent = image_id
    except NotPresentable:
        return None
    return list(reversed(chain))
