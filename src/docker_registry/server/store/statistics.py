"""What the store holds, counted (for metrics), and the schema revision it is at (for readiness).

Counts are whole-table aggregates: cheap enough to run every few seconds on a registry of many thousand images,
not on every request (the metrics feature caches them between scrapes)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from .base import StoreBase
from .tables import blobs, manifests, repositories, uploads

_COUNTS = sa.select(
    sa.select(sa.func.count()).select_from(repositories).scalar_subquery(),
    sa.select(sa.func.count()).select_from(manifests).scalar_subquery(),
    sa.select(sa.func.count()).select_from(blobs).scalar_subquery(),
    sa.select(sa.func.coalesce(sa.func.sum(blobs.c.size), 0)).scalar_subquery(),
    sa.select(sa.func.count()).select_from(uploads).scalar_subquery(),
)
_REVISION = sa.text("SELECT version_num FROM alembic_version")
_READ_ONLY = sa.text("SELECT current_setting('transaction_read_only')")


@dataclass(frozen=True, slots=True)
class Inventory:
    repositories: int
    manifests: int
    """Manifests per repository: one pushed to two repositories counts twice, as it is stored twice."""
    blobs: int
    """Distinct blobs, however many repositories link each."""
    blob_bytes: int
    """The sum of the distinct blobs' sizes: what blob storage holds, manifests aside."""
    uploads: int
    """Upload sessions begun and not yet finished or cancelled."""


class StatisticsQueries(StoreBase):
    def inventory(self) -> Inventory:
        row = self._read(lambda conn: conn.execute(_COUNTS).one())
        return Inventory(*(int(value) for value in row))

    def schema_revision(self) -> str | None:
        """The migration the database is at (alembic's version table); None on a database never migrated."""
        revision: str | None = self._read(lambda conn: conn.execute(_REVISION).scalar())
        return revision

    def refuses_writes(self) -> str | None:
        """Why every write would be refused, as far as can be told without writing (no lock is taken): on SQLite
        the database file or its journal not writable (a read-only mount, an immutable file, a file mode); on
        PostgreSQL a read-only session (a hot standby the address now reaches after a failover,
        `default_transaction_read_only`). None when writes may go."""
        if self._dialect == "postgresql":
            read_only = self._read(lambda conn: conn.execute(_READ_ONLY).scalar())
            return "the database accepts no writes (transaction_read_only is on)" if read_only == "on" else None
        path = self.engine.url.database
        if not path or path == ":memory:":
            return None
        for name in (path, f"{path}-wal", f"{path}-shm"):
            try:
                os.stat(name)
            except FileNotFoundError:  # a journal not made yet
                continue
            if not os.access(name, os.W_OK):
                return f"the database file {name} is not writable"
        return None
