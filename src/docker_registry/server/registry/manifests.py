"""Parsing and validation of pushed manifests, per media type, with no I/O.

The registry stores manifest bytes exactly as received; this module only decides whether they are acceptable and
extracts what the metadata store indexes: referenced blobs and child manifests, subject, artifact type,
annotations.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from docker_registry.core.digest import Digest, DigestError, Hasher, parse_digest

from ..store.models import Descriptor, Manifest, StoredManifest
from . import strict_json
from .errors import MANIFEST_INVALID, RegistryError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MAX_SIZE = 2**63 - 1
"""The largest blob, and a descriptor's largest size: sizes are 64-bit in the database and in every client (a
foreign layer's size is checked nowhere else)."""
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
SUPPORTED_TYPES = IMAGE_TYPES | INDEX_TYPES
DOCKER_TYPES = frozenset({DOCKER_MANIFEST, DOCKER_MANIFEST_LIST})
GENERIC_CONTENT_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})
FOREIGN_LAYER_TYPES = {
    DOCKER_MANIFEST: frozenset({"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}),
    OCI_MANIFEST: frozenset(
        {
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        }
    ),
}
"""Per manifest type, the layers that, given `urls`, clients fetch from there rather than from the registry
(Windows base layers): taken without the repository having them, as Distribution's handlers take them (a Docker
image's foreign layers; an OCI image's layers of these types). Any other layer must be in the repository."""
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
"""RFC 6838 type/subtype without parameters, as the image-spec's schema writes it; at most 255 characters, so it
always fits the database's media type columns."""


def _invalid(detail: str) -> RegistryError:
    return RegistryError(MANIFEST_INVALID, detail)


def _check_urls(urls: tuple[str, ...], where: str) -> None:
    """A foreign layer's URLs are where clients download it: http or https, without a fragment (Distribution's
    rule)."""
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise _invalid(f"{where}: urls must be http or https URLs without a fragment: {url[:200]!r}")


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where}: descriptor must be an object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise _invalid(f"{where}: mediaType must be a media type (RFC 6838 type/subtype)")
    if not isinstance(digest, str):
        raise _invalid(f"{where}: digest must be a string")
    try:
        parsed = parse_digest(digest)
    except DigestError as e:
        raise _invalid(f"{where}: {e}") from None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise _invalid(f"{where}: size must be an integer from 0 to 2^63 - 1")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _invalid(f"{where}: urls must be a list of strings")
    return Descriptor(media_type, parsed, size, tuple(urls))


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid(f"{where}: annotations must map strings to strings")
    return value


def _media_type(content_type: str, body: dict[str, Any]) -> str:
    """The manifest's type from the body's mediaType and the request's Content-Type, which must agree."""
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header = content_type.split(";", 1)[0].strip().lower()
    if header in GENERIC_CONTENT_TYPES:
        header = ""
    if declared and header and declared != header:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {header!r}")
    media_type = declared or header
    if not media_type:
        # OCI allows omitting mediaType: tell an index from an image by its shape.
        if "manifests" in body:
            media_type = OCI_INDEX
        elif "config" in body:
            media_type = OCI_MANIFEST
        else:
            raise _invalid("cannot tell the manifest's media type: no mediaType and no Content-Type")
    if media_type not in SUPPORTED_TYPES:
        raise _invalid(f"unsupported manifest media type {media_type!r}")
    if not declared and media_type in DOCKER_TYPES:
        # Docker's schema 2 requires it (Distribution refuses it missing); and the same bytes without it may be
        # pushed as OCI, whose type a digest keeps for good: bytes without a mediaType are OCI's only
        raise _invalid(f"a {media_type} manifest must give its mediaType")
    return media_type


def default_platform(index: StoredManifest) -> Digest | None:
    """The linux/amd64 image of a Docker manifest list, which CNCF Distribution serves in the list's place, by tag,
    to a client that does not accept lists (Docker engines before manifest lists, minimal clients that list only
    schema 2 in `Accept`): the platform such clients ran on. None for an OCI index (Distribution serves those to no
    such client either) or a list without that platform."""
    if index.media_type != DOCKER_MANIFEST_LIST:
        return None
    entries = json.loads(index.content).get("manifests") or []  # validated when pushed
    for entry in entries:
        platform = entry.get("platform")  # an object since pushes check it; a list stored before might hold any
        if isinstance(platform, dict) and platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return parse_digest(entry["digest"])
    return None


def _check_platform(platform: object, where: str) -> None:
    """An index entry's platform, when given, is an object whose names are strings (the image spec's; Go clients
    read it into a struct and fail on anything else)."""
    if platform is None:
        return
    if not isinstance(platform, dict):
        raise _invalid(f"{where} must be an object")
    for key in ("architecture", "os", "os.version", "variant"):
        if key in platform and not isinstance(platform[key], str):
            raise _invalid(f"{where}.{key} must be a string")
    for key in ("os.features", "features"):
        if key in platform and not (isinstance(platform[key], list) and all(isinstance(f, str) for f in platform[key])):
            raise _invalid(f"{where}.{key} must be a list of strings")


def digest_of(raw: bytes, algorithm: str = "sha256") -> Digest:
    h = Hasher(algorithm)
    h.update(raw)
    return h.digest()


def parse_manifest(raw: bytes, content_type: str, algorithm: str = "sha256") -> Manifest:
    """Validate `raw` as a manifest of a supported type; raise MANIFEST_INVALID explaining what is wrong."""
    try:
        body = strict_json.loads(raw)
    except ValueError as e:
        raise _invalid(f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(body, dict):
        raise _invalid("a manifest must be a JSON object")
    if body.get("schemaVersion") != 2 or isinstance(body.get("schemaVersion"), bool):
        raise _invalid("schemaVersion must be 2")
    media_type = _media_type(content_type, body)
    manifest = Manifest(raw=raw, media_type=media_type, digest=digest_of(raw, algorithm))
    manifest.annotations = _annotations(body.get("annotations"), "annotations")
    artifact_type = body.get("artifactType")
    if artifact_type == "":
        artifact_type = None  # empty is as missing: the spec then takes the config's media type
    if artifact_type is not None and (not isinstance(artifact_type, str) or not _MEDIA_TYPE.fullmatch(artifact_type)):
        raise _invalid("artifactType must be a media type (RFC 6838 type/subtype)")
    if "subject" in body and body["subject"] is not None:
        manifest.subject = _descriptor(body["subject"], "subject")
    if media_type in IMAGE_TYPES:
        config = _descriptor(body.get("config"), "config")
        manifest.blobs.append(config)
        layers = body.get("layers")
        if layers is None and media_type == OCI_MANIFEST:
            layers = []
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        for i, layer in enumerate(layers):
            d = _descriptor(layer, f"layers[{i}]")
            if d.urls and d.media_type in FOREIGN_LAYER_TYPES[media_type]:
                _check_urls(d.urls, f"layers[{i}]")
                manifest.foreign.append(d)
            else:  # `urls` on another layer are only a hint: its bytes must be here like any layer's
                manifest.blobs.append(d)
        if media_type == OCI_MANIFEST and artifact_type is None:
            artifact_type = config.media_type
    else:
        children = body.get("manifests")
        if not isinstance(children, list):
            raise _invalid("manifests must be a list")
        for i, child in enumerate(children):
            d = _descriptor(child, f"manifests[{i}]")
            _check_platform(child.get("platform"), f"manifests[{i}].platform")
            # An entry of another type than a manifest's is a blob: BuildKit's registry cache (`--cache-to
            # type=registry` with `image-manifest=false`, its default before v0.21) lists its layers and cache
            # config so; Distribution, Docker Hub and GHCR take it. It must be in the repository like a layer.
            (manifest.children if d.media_type in SUPPORTED_TYPES else manifest.blobs).append(d)
    manifest.artifact_type = artifact_type
    return manifest
