"""`docker-registry garbage-collect`: one collection, while the registry serves or not.

Progress goes to stderr (a bar on a terminal, log lines otherwise), the summary to stdout (text, or JSON with
`--json`). Exit status: 0 done, 1 another collection is running or the collection failed, 2 configuration error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from docker_registry.core.driver import Base

from ..config import Config
from ..store.collection import CollectionQueries
from ..store.engine import create_engine, database_url
from ..store.reserve import reserve_for
from ..store.writegate import gate_for
from .background import holder_name
from .cached import cached_scopes
from .collector import THREADS, Busy, Collector, Options
from .progress import BarProgress, LogProgress, Progress
from .summary import Summary

EXIT_FAILED = 1


def _progress(stream: TextIO) -> Progress:
    if stream.isatty():
        return BarProgress(stream)
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return LogProgress()


def open_store(config: Config) -> CollectionQueries:
    """The collection's queries, on an engine of their own tuned for rewriting much of the database at once
    (`create_engine(maintenance=True)`)."""
    url = database_url(config)
    engine = create_engine(url, config.database.locktimeout, maintenance=True)
    return CollectionQueries(engine, config.database.locktimeout, gate_for(url), reserve_for(url))


def garbage_collect(config: Config, driver: Base, *, dry_run: bool, delete_untagged: bool, as_json: bool) -> int:
    """Run one collection with the configured grace period (`gc.delay`) and upload age over a prepared database
    (`preparation.prepare`); print its summary."""
    store = open_store(config)
    purging = config.storage.maintenance.uploadpurging
    options = Options(
        delay=config.gc.delay,
        delete_untagged=delete_untagged or config.gc.deleteuntagged,
        dry_run=dry_run,
        # `dryrun` makes purging log what it would purge (the background job does): the command leaves them too
        upload_age=purging.age if purging.enabled and not purging.dryrun else None,
        cached=cached_scopes(config),
    )
    try:
        summary = asyncio.run(_run(store, driver, options, _progress(sys.stderr)))
    except Busy as exc:
        print(f"docker-registry: {exc}; try again later", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    if as_json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(summary.text())
    return 0


async def _run(store: CollectionQueries, driver: Base, options: Options, progress: Progress) -> Summary:
    # the store's queries, and drivers removing objects a few at once, each mostly waiting on the backend
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(THREADS))
    try:
        return await Collector(store, driver, holder_name(), progress).run(options)
    finally:
        await driver.close()
