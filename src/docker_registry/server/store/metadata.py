"""The metadata store: every query of the registry, grouped by what it holds. Every method is synchronous and
short; the registry logic calls them through `AsyncMetadataStore`, which runs each in a thread.

Writes are single transactions, so a concurrent push of the same tag or blob by several clients (in several
processes) ends in one consistent state: the last committed tag wins, links are idempotent.
"""

from __future__ import annotations

from functools import partial

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .blobs import BlobQueries, blob_entry
from .browse import BrowseQueries
from .events import EventQueries
from .manifests import ManifestQueries, stored_manifest
from .models import StoredManifest
from .proxystate import ProxyStateQueries
from .pulls import PullQueries
from .repositories import RepositoryQueries
from .statistics import StatisticsQueries
from .uploads import UploadQueries
from .v1 import V1Queries


def blob_params(repository: str, digest: Digest) -> dict[str, str]:
    """The parameters of `blob_or_manifest`."""
    return {"repository": repository, "digest": str(digest)}


def blob_or_manifest_in(conn: sa.Connection, params: dict[str, str]) -> tuple[int | None, StoredManifest | None, bool]:
    """`MetadataStore.blob_or_manifest` in the caller's connection (also run on the event loop: `inline`)."""
    entry = blob_entry(conn, params)
    if entry is not None:
        return entry[0], None, entry[1]
    return None, stored_manifest(conn, params), False


class MetadataStore(
    RepositoryQueries,
    ManifestQueries,
    BlobQueries,
    UploadQueries,
    V1Queries,
    StatisticsQueries,
    EventQueries,
    BrowseQueries,
    PullQueries,
    ProxyStateQueries,
):
    def blob_or_manifest(self, repository: str, digest: Digest) -> tuple[int | None, StoredManifest | None, bool]:
        """What a blob GET or HEAD may serve under `digest`: a linked blob's size, else the manifest of that digest
        (Distribution serves manifests from its blob store too), and whether garbage collection marked the link.
        One thread hop for both look-ups: a client HEADs every layer it is about to push, and each of those misses
        would otherwise cost two; and one connection for both queries."""
        return self._read(partial(blob_or_manifest_in, params=blob_params(repository, digest)))
