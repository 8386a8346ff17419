"""Schema migrations with Alembic; the scripts live in this package so an installed registry can upgrade itself."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory


def _config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "docker_registry.server.store:migrations")
    return cfg


def head() -> str | None:
    """The newest migration this registry ships: a database at another revision is not ready to serve."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
