"""What a manifest and an image config say, read for people: layers and sizes, platforms of an index, the config's
entrypoint, environment, labels and history. Tolerant: a field of the wrong shape is left out, never an error,
since any valid manifest may carry odd optional fields."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MANIFEST_TYPES = INDEX_TYPES | {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A config larger than this is not shown: the UI reads configs whole, and honest ones are kilobytes."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""
    artifact_type: str = ""


@dataclass(slots=True)
class ManifestView:
    media_type: str
    is_index: bool
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    pretty: str = ""

    @property
    def platforms(self) -> list[str]:
        return [child.platform for child in self.children if child.platform]

    @property
    def compressed_size(self) -> int | None:
        """Config and layers: what a pull downloads. None for an index (its children have their own)."""
        if self.is_index:
            return None
        return sum(layer.size for layer in self.layers) + (self.config.size if self.config else 0)


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the pretty-printed manifest: plain text, or a descriptor's digest shown as a link."""

    text: str
    digest: str = ""
    manifest: bool = False
    """The link goes to the manifest's page (children, subject), not to the blob's download (config, layers)."""


_DIGEST_VALUE = re.compile(r'"digest": "([^"\\]+)"')


def linked_pretty(view: ManifestView) -> list[Segment]:
    """The pretty-printed manifest cut around the digests of its descriptors, so each can be a link."""
    manifests = {d.digest for d in (*view.children, view.subject) if d}
    blobs = {d.digest for d in (view.config, *view.layers) if d}
    segments: list[Segment] = []
    start = 0
    for found in _DIGEST_VALUE.finditer(view.pretty):
        digest = found.group(1)
        if digest not in manifests and digest not in blobs:
            continue
        segments.append(Segment(view.pretty[start : found.start(1)]))
        segments.append(Segment(digest, digest, digest in manifests))
        start = found.end(1)
    segments.append(Segment(view.pretty[start:]))
    return segments


@dataclass(frozen=True, slots=True)
class ConfigView:
    created: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)
    """(created, created_by) of each step."""
    platform: str = ""


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def platform_text(platform: Any) -> str:
    if not isinstance(platform, dict):
        return ""
    parts = [_str(platform.get("os")), _str(platform.get("architecture")), _str(platform.get("variant"))]
    return "/".join(p for p in parts if p)


def _descriptor(value: Any) -> Descriptor | None:
    if not isinstance(value, dict) or not _str(value.get("digest")):
        return None
    return Descriptor(
        _str(value.get("mediaType")),
        _str(value.get("digest")),
        _int(value.get("size")),
        platform_text(value.get("platform")),
        _str(value.get("artifactType")),
    )


def _document(content: bytes) -> Any:
    """The JSON document, or None: nesting too deep for this stack is no document either (pushes refuse deep
    manifests, but the UI parses from deeper in its stack, and nothing checks a config's depth)."""
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def read_manifest(media_type: str, content: bytes, *, pretty: bool = False) -> ManifestView:
    """What the manifest says; with `pretty`, also its indented text, for its own page only (several MB of an
    index took 0.4 s to indent, and a tag list reads fifty manifests)."""
    document = _document(content)
    if not isinstance(document, dict):
        text = content.decode(errors="replace") if pretty else ""
        return ManifestView(media_type, media_type in INDEX_TYPES, pretty=text)
    try:
        text = json.dumps(document, indent=2) if pretty else ""
    except RecursionError:  # parsed a frame deeper than it can be written back: shown as sent
        text = content.decode(errors="replace")
    view = ManifestView(media_type, media_type in INDEX_TYPES, pretty=text)
    if view.is_index:
        manifests = document.get("manifests")
        entries = [d for d in map(_descriptor, manifests if isinstance(manifests, list) else []) if d]
        # entries of other types than a manifest's are blobs (BuildKit's registry cache): listed as blobs
        view.children = [d for d in entries if d.media_type in MANIFEST_TYPES]
        view.layers = [d for d in entries if d.media_type not in MANIFEST_TYPES]
    else:
        view.config = _descriptor(document.get("config"))
        layers = document.get("layers")
        view.layers = [d for d in map(_descriptor, layers if isinstance(layers, list) else []) if d]
    view.subject = _descriptor(document.get("subject"))
    view.artifact_type = _str(document.get("artifactType")) or (
        view.config.media_type if view.config and view.subject else ""
    )
    annotations = document.get("annotations")
    if isinstance(annotations, dict):
        view.annotations = {str(k): str(v) for k, v in annotations.items()}
    return view


def read_config(content: bytes) -> ConfigView:
    document = _document(content)
    if not isinstance(document, dict):
        return ConfigView()
    config = document.get("config")
    config = config if isinstance(config, dict) else {}
    labels = config.get("Labels")
    history = document.get("history")
    steps = [
        (_str(step.get("created")), _str(step.get("created_by")) or _str(step.get("comment")))
        for step in (history if isinstance(history, list) else [])
        if isinstance(step, dict)
    ]
    return ConfigView(
        created=_str(document.get("created")),
        entrypoint=_strings(config.get("Entrypoint")),
        cmd=_strings(config.get("Cmd")),
        env=_strings(config.get("Env")),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        history=steps,
        platform=platform_text(document),
    )
