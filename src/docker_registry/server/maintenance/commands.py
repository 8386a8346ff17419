"""The maintenance commands as the command line runs them: open the stores the configuration names, run, report,
and turn the outcome into an exit status (`options`: 0 nothing wrong, 1 problems remain, 2 usage error)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from docker_registry.core.driver import Base
from docker_registry.drivers.file import Driver as FileDriver

from ..config import Config
from ..store.engine import create_engine, database_url
from ..store.inventory import InventoryQueries
from ..store.metadata import MetadataStore
from ..store.reserve import reserve_for
from ..store.writegate import gate_for
from .console import Console
from .distribution import V2, NotADistributionTree, tree_root
from .fsck import fsck
from .importer import Importer
from .options import EXIT_OK, EXIT_PROBLEMS, IMPORT_SOURCES


def _stores(config: Config) -> tuple[MetadataStore, InventoryQueries]:
    url = database_url(config)
    engine = create_engine(url, config.database.locktimeout)
    gate, reserve = gate_for(url), reserve_for(url)
    return (
        MetadataStore(engine, config.database.locktimeout, gate, reserve),
        InventoryQueries(engine, config.database.locktimeout, gate, reserve),
    )


def _fetched_on_demand(config: Config) -> Callable[[str], bool]:
    """Whether a repository's content comes from a pull-through cache's upstream when first pulled: the whole
    registry for a mirror, the names under each upstream's prefix otherwise."""
    proxy = config.proxy
    if proxy is None:
        return lambda _name: False
    if proxy.remoteurl is not None:
        return lambda _name: True
    prefixes = tuple(f"{upstream.prefix}/" for upstream in proxy.upstreams)
    return lambda name: name.startswith(prefixes)


def run_fsck(config: Config, driver: Base, *, repair: bool, jobs: int, console: Console) -> int:
    store, inventory = _stores(config)

    async def run() -> int:
        result = await fsck(driver, inventory, console, repair, jobs, _fetched_on_demand(config))
        console.summary(result.counts, result.read_bytes)
        return EXIT_PROBLEMS if result.remaining else EXIT_OK

    return _run(run, driver, store, console)


def _run(command: Callable[[], Awaitable[int]], driver: Base, store: MetadataStore, console: Console) -> int:
    """Run a command to its exit status; the database failing (unreachable, locked beyond the lock timeout) ends it
    with a problem line, not a traceback."""

    async def run() -> int:
        try:
            return await command()
        finally:
            await driver.close()

    try:
        return asyncio.run(run())
    except sa.exc.SQLAlchemyError as e:
        console.problem(f"the metadata database failed, stopping: {e}")
        return EXIT_PROBLEMS
    finally:
        store.close()


def _filesystem_root(config: Config) -> str | None:
    if config.storage.driver not in ("filesystem", "file"):
        return None
    return os.path.realpath(str(config.storage.options.get("rootdirectory") or "./data"))


class UsageError(Exception):
    """Arguments that name nothing to work on: reported before anything is opened or created."""


def import_tree(source: str, path: str) -> str:
    """The folder a `--from SOURCE PATH` import reads (for Distribution, its `docker/registry/v2`)."""
    if source not in IMPORT_SOURCES:
        raise UsageError(f"unknown source {source!r}: --from takes one of {', '.join(IMPORT_SOURCES)}")
    try:
        return tree_root(path)
    except NotADistributionTree as e:
        raise UsageError(str(e)) from None


def run_import(config: Config, driver: Base, tree: str, *, jobs: int, console: Console) -> int:
    """Import the Distribution tree at `tree` (from `import_tree`)."""
    root = _filesystem_root(config)
    in_place = root == os.path.realpath(tree)
    if in_place:
        console.note(f"importing {tree} in place: blobs are verified where they are, nothing is copied")
    else:
        console.note(f"importing {tree} by copying its blobs into {config.storage.describe()}; the tree is unchanged")
        if root is not None and os.path.realpath(os.path.join(root, V2)) == os.path.realpath(tree):
            console.note(f"to import in place instead, set storage.filesystem.rootdirectory to {tree}")
    store, inventory = _stores(config)
    importer = Importer(
        FileDriver({"rootdirectory": tree}),
        driver,
        store,
        inventory,
        console,
        in_place=in_place,
        jobs=jobs,
        max_manifest_bytes=config.validation.manifest_max_bytes,
    )

    async def run() -> int:
        result = await importer.run()
        console.summary(result.counts, result.read_bytes)
        return EXIT_PROBLEMS if console.problems else EXIT_OK

    return _run(run, driver, store, console)
