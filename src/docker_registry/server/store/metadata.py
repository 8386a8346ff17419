"""The metadata store: every query of the registry, grouped by what it holds. Every method is synchronous and
short; the registry logic calls them through `AsyncMetadataStore`, which runs each in a thread.

Writes are single transactions, so a concurrent push of the same tag or blob by several clients (in several
processes) ends in one consistent state: the last committed tag wins, links are idempotent.
"""

from __future__ import annotations

from .blobs import BlobQueries
from .manifests import ManifestQueries
from .repositories import RepositoryQueries
from .uploads import UploadQueries


class MetadataStore(RepositoryQueries, ManifestQueries, BlobQueries, UploadQueries):
    pass
