"""The bridge from v1 to v2: a v1 image chain presented as a Docker schema 2 manifest and image config, so modern
clients pull what old engines pushed.

The config is the top image's v1 json without the v1-only keys, plus `rootfs.diff_ids` (one per image of the
chain, root first) and a `history` entry per image. Layers keep their bytes and digests: the manifest names the
blobs the v1 push stored. Every layer is listed as `tar.gzip`, as Docker's own v1-to-v2 migration did: clients
detect the compression from the bytes (a v1 layer may be plain tar or xz), and check the diff_id after inflating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from docker_registry.core.digest import Digest, Hasher

from ..registry.errors import blob_being_deleted
from ..registry.manifests import DOCKER_MANIFEST
from ..registry.service import Registry
from ..store.models import V1Image

CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
V1_ONLY_KEYS = frozenset({"id", "parent", "Size", "parent_id", "layer_id", "checksum"})


def image_config(chain: list[V1Image]) -> bytes:
    """The image config of a chain given top first; every image must have its diff_id."""
    top: dict[str, Any] = json.loads(chain[0].json)
    config = {key: value for key, value in top.items() if key not in V1_ONLY_KEYS}
    config.setdefault("architecture", "amd64")
    config.setdefault("os", "linux")
    root_first = list(reversed(chain))
    config["rootfs"] = {"type": "layers", "diff_ids": [str(image.diff_id) for image in root_first]}
    config["history"] = [_history(image) for image in root_first]
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _history(image: V1Image) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(image.json)
    entry: dict[str, Any] = {}
    if isinstance(data.get("created"), str):
        entry["created"] = data["created"]
    if isinstance(data.get("author"), str) and data["author"]:
        entry["author"] = data["author"]
    container_config = data.get("container_config")
    command = container_config.get("Cmd") if isinstance(container_config, dict) else None
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        entry["created_by"] = " ".join(command)
    if isinstance(data.get("comment"), str) and data["comment"]:
        entry["comment"] = data["comment"]
    return entry


def manifest(config: bytes, config_digest: Digest, chain: list[V1Image]) -> bytes:
    layers = []
    for image in reversed(chain):
        digest, size = _layer(image)
        layers.append({"mediaType": LAYER_MEDIA_TYPE, "size": size, "digest": str(digest)})
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config), "digest": str(config_digest)},
        "layers": layers,
    }
    return json.dumps(document, indent=3).encode()


def _layer(image: V1Image) -> tuple[Digest, int]:
    """The layer blob of a complete image (a chain holds only those)."""
    if image.layer_digest is None or image.size is None:
        raise ValueError(f"image {image.id} has no layer")
    return image.layer_digest, image.size


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def publish(registry: Registry, repository: str, tag: str, chain: list[V1Image]) -> Digest:
    """Store the config blob, link the layers into the repository and point the v2 tag at the new manifest;
    returns the manifest's digest."""
    config = image_config(chain)
    hasher = Hasher("sha256")
    hasher.update(config)
    config_digest = hasher.digest()
    await registry.put_blob(repository, config_digest, _once(config))
    for image in chain:
        if not await registry.store.link_blob(repository, *_layer(image), recorded=True):
            raise blob_being_deleted()  # a layer no repository links (its tags deleted): collected meanwhile
    stored = await registry.put_manifest(repository, tag, manifest(config, config_digest, chain), DOCKER_MANIFEST)
    return stored.digest
