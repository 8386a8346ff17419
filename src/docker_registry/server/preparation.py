"""What every command does before its real work: the data directory and database made ready (migrations), and
the configured storage driver built. Kept apart from the composition root (`application`) so the maintenance
commands (`garbage-collect`, `fsck`, `import`) start without importing aiohttp, the APIs and the features: for
`garbage-collect` that start-up was a fifth of its run and most of its memory."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc

from docker_registry.core.driver import Base, fetch
from docker_registry.core.exceptions import ConfigError

from .config import Config
from .store import migrate
from .store.engine import create_engine, database_url, sqlite_file
from .store.reserve import reserve_for


class SQLiteUnusable(RuntimeError):
    """The SQLite database could not be opened or migrated (a directory or unwritable file where it should be, a
    data directory this user cannot write): the message names the file."""


def _data_dir(config: Config) -> str | None:
    if config.storage.driver not in ("filesystem", "file"):
        return None
    return str(config.storage.options.get("rootdirectory") or "./data")


def prepare(config: Config) -> None:
    """Run once in the master process before workers fork: data directory and database migrations."""
    if config.storage.driver == "inmemory" and not config.database.url:
        # Blobs in memory vanish with the process; metadata kept on disk would then name blobs that are gone.
        # The inmemory driver always runs one worker in this process, so a private temporary database serves it.
        scratch = tempfile.mkdtemp(prefix="docker-registry-inmemory-")
        atexit.register(shutil.rmtree, scratch, True)
        config.database.url = f"sqlite:///{scratch}/registry.db"
    data_dir = _data_dir(config)
    if data_dir is not None:
        os.makedirs(data_dir, exist_ok=True)
    url = database_url(config)
    database_file = sqlite_file(url)
    if database_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(database_file)), exist_ok=True)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
    except sqlalchemy.exc.OperationalError as exc:
        if database_file is None:
            raise
        # sqlite3 names no file ("unable to open database file"), and SQLAlchemy adds a second line of its own.
        raise SQLiteUnusable(f"SQLite database {database_file}: {exc.orig}") from exc
    finally:
        engine.dispose()
    reserve = reserve_for(url)
    if reserve is not None:
        reserve.ensure()
    if config.ui.enabled and config.ui.secret is None:
        # Drawn once here, before workers fork (or are spawned with this config), so all of them accept the
        # UI's session cookies; a restart draws a new one and ends every UI login.
        config.ui.secret = secrets.token_hex(32)


def build_driver(config: Config) -> Base:
    """The configured storage driver; a bad option is a ConfigError naming its key, `storage.<driver>.<option>`."""
    name = config.storage.driver
    try:
        return fetch(name)(config.storage.options)
    except ConfigError as exc:
        raise ConfigError(_storage_key_message(name, config.storage.options, str(exc))) from None


async def check_storage(config: Config) -> None:
    """Build the configured driver, reach its backend once (`Base.check`) and close it: a bad option or an
    unreachable bucket is a ConfigError naming its key, found before any worker starts."""
    driver = build_driver(config)
    try:
        await driver.check()
    except ConfigError as exc:
        raise ConfigError(_storage_key_message(config.storage.driver, config.storage.options, str(exc))) from None
    finally:
        await driver.close()


def _storage_key_message(name: str, options: Mapping[str, Any], message: str) -> str:
    """Drivers only know their own options: put the section in front, and the option when the message opens
    with one (`redirect_base must be ...` -> `storage.example.redirect_base: redirect_base must be ...`)."""
    if message.startswith(f"storage.{name}"):
        return message
    for key in options:
        if message.startswith(f"{key}:"):
            return f"storage.{name}.{message}"
        if message.startswith(f"{key} "):
            return f"storage.{name}.{key}: {message}"
    return f"storage.{name}: {message}"
