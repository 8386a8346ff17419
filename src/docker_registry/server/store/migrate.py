"""Schema migrations with Alembic; the scripts live in this package so an installed registry can upgrade itself."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "docker_registry.server.store:migrations")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
