"""What the metadata store takes and gives: plain records, no queries and no HTTP.

A pushed manifest reaches the store as a `Manifest`, already parsed and validated by the registry logic; the
store indexes what it names (blobs, children, subject) and keeps its bytes. Digests are parsed `Digest`s here and
in every method of the store; only its columns hold them as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from docker_registry.core.digest import Digest

WRITER_LEASE_SECONDS = 60.0
"""A session's writer renews its claim well within this; a claim not renewed for this long belongs to a process
that died (on another host: on its own, the claimant's host frees the claim at once) and another may take over.
Here, not in `uploads`, so garbage collection reads it without importing the upload and blob queries."""
COLLECTION_LEASE = "gc"
"""The lease a garbage collection holds (`gc`), which fsck (`maintenance`) reads too: features do not import
each other."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()


@dataclass(slots=True)
class Manifest:
    """A validated manifest and what the store indexes about it."""

    raw: bytes
    media_type: str
    digest: Digest
    blobs: list[Descriptor] = field(default_factory=list)
    """Config and layers that must be present in the repository."""
    foreign: list[Descriptor] = field(default_factory=list)
    """Non-distributable layers with URLs: referenced, not required to be pushed."""
    children: list[Descriptor] = field(default_factory=list)
    """Manifests an index or list points to; they must be present in the repository."""
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StoredManifest:
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Referrer:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository: str
    size: int
    writer: str | None = None
    """The claim token of the request writing to the session now, if any."""
    writer_process: str | None = None
    """That request's process (process_identity), when it could be told."""
    writer_since: float | None = None
    owner: str | None = None
    """The authenticated user who began the session; None when anonymous."""


class BadReference(Exception):
    """A pushed manifest names a blob or child manifest the repository lacks, or gives it the wrong size."""

    def __init__(self, kind: str, digest: Digest, declared_size: int, stored_size: int | None) -> None:
        super().__init__(f"{kind} {digest}: size {declared_size}, stored {stored_size}")
        self.kind = kind
        """'blob' (config or layer) or 'manifest' (an index's child)."""
        self.digest = digest
        self.declared_size = declared_size
        self.stored_size = stored_size
        """None when the repository does not have it at all."""


@dataclass(frozen=True, slots=True)
class V1Image:
    """An image of the legacy v1 API: its json as pushed, its chain and its layer (once pushed)."""

    id: str
    json: bytes
    parent: str | None
    ancestry: list[str]
    """This image first, then its parent, up to the root (the v1 `ancestry` answer)."""
    layer_digest: Digest | None
    size: int | None
    checksum: str | None
    """The payload checksum computed as the layer streamed in: `sha256:` of json, a newline, and the layer."""
    diff_id: Digest | None
    """The sha256 of the uncompressed layer (the `diff_ids` of an image config)."""
    complete: bool


@dataclass(frozen=True, slots=True)
class V1Tag:
    """A tag as the v1 API sees it: the image a v1 push pointed it at, or the v1 chain a v2-pushed manifest was
    presented as (None until it is)."""

    manifest: Digest
    image_id: str | None
    json: str | None
    """What a v1 tag push recorded (None for a v2-written tag)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event to keep in the outbox (the `events` table): written by the same transaction as the change it
    reports, so the change and its event are stored together or not at all. The store keeps `payload` as given."""

    created_at: float
    payload: str
    count: int = 1
    """Events in `payload`: a batch of pull events holds several."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A row of the outbox: one event as JSON, or a worker's batch of pull events (`notifications.envelope.expand`
    reads both)."""

    id: int
    """Increasing in commit order: delivery follows it."""
    created_at: float
    """When the event (of a batch: the oldest of them) happened."""
    payload: str


class Cursor(NamedTuple):
    """Where an endpoint is in the outbox: every row up to `position` given whole, and the first `given` events of
    the next row (a batch of pulls sent in several envelopes)."""

    position: int
    given: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """The outcome of asking for the delivery lease."""

    held: bool
    expires_at: float
