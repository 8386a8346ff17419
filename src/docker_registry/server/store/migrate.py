"""Schema migrations with Alembic; the scripts live in this package so an installed registry can upgrade itself.

Alembic (and the loading of every script) costs a command like `garbage-collect` a good part of its start-up, so
a database already at the newest revision is recognised without it: the scripts' revision ids are read from their
source, and only a database at another revision (or none) goes through Alembic.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .engine import signal_change

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

VERSIONS = Path(__file__).parent / "migrations" / "versions"


def _config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "docker_registry.server.store:migrations")
    return cfg


def head() -> str | None:
    """The newest migration this registry ships: a database at another revision is not ready to serve."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def _assigned(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return ast.literal_eval(node.value) if node.value is not None else None
    raise LookupError(name)


def _head_from_sources() -> str | None:
    """The one revision no script revises, read from the scripts' source; None if that is not plain to see."""
    revisions: set[str] = set()
    revised: set[str] = set()
    try:
        for script in VERSIONS.glob("*.py"):
            tree = ast.parse(script.read_text(encoding="utf-8"))
            revision, down = _assigned(tree, "revision"), _assigned(tree, "down_revision")
            if not isinstance(revision, str):
                return None
            revisions.add(revision)
            revised.update([down] if isinstance(down, str) else list(down) if isinstance(down, tuple) else [])
    except (OSError, SyntaxError, ValueError, LookupError):
        return None
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def _current(engine: sa.Engine) -> str | None:
    """The database's revision; None when it has none yet."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        versions = list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    return versions[0] if len(versions) == 1 else None


class NewerSchemaError(RuntimeError):
    """The database is at a revision this release does not ship: a newer release migrated it."""

    def __init__(self, revision: str) -> None:
        super().__init__(
            f"the database is at schema revision {revision}, which this release does not know: a newer release "
            "migrated it; run that release (there is no downgrade) or restore the database from a backup"
        )


MIGRATION_LOCK = 0x646F636B
"""PostgreSQL advisory lock key held while migrating: nodes starting together migrate one after the other, and
the later ones find the schema current (without it, two nodes creating the tables at once: one fails to start)."""


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    if revision == "head":
        newest = _head_from_sources()
        if newest is not None and _current(engine) == newest:
            return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    cfg = _config()
    # One migrating process at a time: PostgreSQL's advisory lock; SQLite's write lock, taken at the start
    # (BEGIN IMMEDIATE, waiting out the lock timeout) so that two processes starting at once on an old database
    # queue: a deferred transaction's first DDL failed at once ("database is locked", no busy wait) when the other
    # had begun migrating, and that process did not start.
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        before = MigrationContext.configure(conn).get_current_revision()
        try:
            command.upgrade(cfg, revision)
        except CommandError as error:
            if before is None or "Can't locate revision" not in str(error):
                raise
            raise NewerSchemaError(before) from None
        # A migration may move data: running workers (of other nodes) forget what they cached.
        if MigrationContext.configure(conn).get_current_revision() != before:
            signal_change(conn)
