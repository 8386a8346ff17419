"""Schema migrations with Alembic; the scripts live in this package so an installed registry can upgrade itself."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .engine import signal_change


def _config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "docker_registry.server.store:migrations")
    return cfg


def head() -> str | None:
    """The newest migration this registry ships: a database at another revision is not ready to serve."""
    return ScriptDirectory.from_config(_config()).get_current_head()


MIGRATION_LOCK = 0x646F636B
"""PostgreSQL advisory lock key held while migrating: nodes starting together migrate one after the other, and
the later ones find the schema current (without it, two nodes creating the tables at once: one fails to start)."""


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = _config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(cfg, revision)
        # A migration may move data: running workers (of other nodes) forget what they cached. Only then: on
        # SQLite this transaction began deferred, and the signal's write would have to upgrade its read snapshot,
        # which fails at once ("database is locked", no busy wait) whenever another process committed meanwhile;
        # a migration's own DDL has taken the write lock already.
        if MigrationContext.configure(conn).get_current_revision() != before:
            signal_change(conn)
