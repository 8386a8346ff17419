"""What the registry logic tells an event recorder (the notifications feature), without knowing who listens.

A change (push, mount, delete) asks the recorder for its event records first and hands them to the store with
the change, which writes both in one transaction: an acknowledged change always has its event, and a change that
failed has none. A pull changes nothing, so it is only reported (`pulled`), and the recorder keeps it off the
request path. Without notifications configured the registry has no recorder and none of this runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol

from docker_registry.core.digest import Digest

from ..store.models import Descriptor, EventRecord

Action = Literal["push", "pull", "mount", "delete"]
BLOB_MEDIA_TYPE = "application/octet-stream"
"""The media type of a blob in an event, as Distribution reports it (blobs carry none of their own)."""


class Target(NamedTuple):
    """What an event is about. A named tuple, not a dataclass: every recorded manifest GET makes one, and the
    recorder hashes it, both done in C here (a frozen dataclass took 1.2 µs to make and 0.4 µs to hash)."""

    kind: Literal["manifest", "blob", "tag"]
    repository: str
    digest: Digest | None = None
    media_type: str | None = None
    size: int | None = None
    tag: str | None = None
    from_repository: str | None = None
    """The repository a mounted blob came from."""
    references: Sequence[Descriptor] = ()
    """A manifest's blobs and child manifests."""


_make = tuple.__new__


def pulled_target(
    kind: Literal["manifest", "blob"], repository: str, digest: Digest, media_type: str, size: int, tag: str | None
) -> Target:
    """The target of a pull, made as a plain tuple: every cached manifest GET and blob HEAD makes one, and the
    named tuple's own constructor (defaults and keywords handled in Python) takes twice as long."""
    return _make(Target, (kind, repository, digest, media_type, size, tag, None, ()))


class EventRecorder(Protocol):
    def record(self, action: Action, targets: Sequence[Target]) -> list[EventRecord]:
        """The records to write with a change; empty when no endpoint wants them."""

    def later(self, action: Action) -> Callable[[Sequence[Target]], list[EventRecord]]:
        """`record` for targets known only inside the change's transaction, in the database writer's thread (the
        tags a manifest's deletion removes): the request is read now, on its own thread."""

    def pulled(self, target: Target) -> None:
        """A manifest or blob was served; kept off the request path, not durable."""
