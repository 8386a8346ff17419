"""The metadata store: every query of the registry, grouped by what it holds. Every method is synchronous and
short; the registry logic calls them through `AsyncMetadataStore`, which runs each in a thread.

Writes are single transactions, so a concurrent push of the same tag or blob by several clients (in several
processes) ends in one consistent state: the last committed tag wins, links are idempotent.
"""

from __future__ import annotations

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
        params = {"repository": repository, "digest": str(digest)}

        def look_up(conn: sa.Connection) -> tuple[int | None, StoredManifest | None, bool]:
            entry = blob_entry(conn, params)
            if entry is not None:
                return entry[0], None, entry[1]
            return None, stored_manifest(conn, params), False

        return self._read(look_up)
