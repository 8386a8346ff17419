"""One garbage collection: mark what nothing uses, delete what stayed unused for the grace period.

The order matters: untagged manifests first (their deletion leaves links unreferenced), then the v1 images deleted
manifests were presented as (which kept their layers), then links (leaving blobs unlinked), then blobs, expired
upload sessions, and last the repositories all that left empty, so with no grace period a single run frees a
deleted image completely. Everything runs under a lease in the metadata database, so only one collection runs at a
time on any number of processes and nodes; the lease is renewed before every batch, and a collection that lost it
stops.

A blob is deleted in three steps: its row is marked as being deleted (no upload links it again from then on: they
wait, and mounts refuse), its file is deleted, then its row. A collection that dies in between leaves marked rows,
which the next one finishes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from docker_registry.core import exceptions
from docker_registry.core.digest import blob_path
from docker_registry.core.driver import Base

from ..registry.process_identity import is_dead, this_process
from ..registry.upload_area import upload_area, upload_path
from ..store.base import stored_digest
from ..store.collection import CollectionQueries, DryRun, LeaseLost
from ..store.models import COLLECTION_LEASE
from .cached import CachedScope
from .progress import Progress
from .summary import Summary

T = TypeVar("T")
LEASE_SECONDS = 60.0
"""A crashed collector's lease runs out after this."""
RENEW_AFTER = 10.0
"""A collector renews its lease before a batch once this long has passed since it last did: well within the lease."""
BATCH = 2000
"""Rows deleted per transaction: tens of milliseconds, so pushes barely wait for the database's write lock."""
THREADS = 24
"""Threads of a collection's asyncio pool: the store's queries, and the deletions of drivers that remove objects
one by one, a few at once (`Base._remove_many`; the filesystem driver removes in a process of its own)."""
REMOVING_AT_ONCE = 2
"""Batches of blob files being removed at once. Each removal mostly waits for the disk (see `remove_many`), and a
batch's slowest files left the disk idle before the next batch began: with two under way, a collection of 9,900
blobs took 1.64, 1.69 and 1.98 s against 2.10, 2.03 and 1.90 s with one (alternated pairs, bench/README.md "gc12")."""
MIN_TEMPORARY_AGE = 60.0
"""Temporary files younger than this are never touched, whatever the grace period (a write in progress)."""
MAX_CASCADES = 100
"""With no grace period, deleting an index makes its children deletable in the same run: rounds at most."""


class Busy(Exception):
    """Another collection holds the lease."""

    def __init__(self, holder: str, until: float) -> None:
        super().__init__(f"another garbage collection is running ({holder}, lease until {time.ctime(until)})")


@dataclass(frozen=True, slots=True)
class Options:
    delay: float
    """The grace period, seconds."""
    delete_untagged: bool = False
    dry_run: bool = False
    upload_age: float | None = None
    """End upload sessions begun longer ago than this (seconds), with their data; None: leave them."""
    cached: tuple[CachedScope, ...] = ()
    """Repositories of the pull-through cache, whose content expires when not pulled (`cached_scopes`)."""


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _dry_run(options: Options, cutoff: float) -> DryRun | None:
    """A dry run's conditions: with no grace period, what is unmarked now would be marked and deleted at once."""
    if not options.dry_run:
        return None
    return DryRun(cutoff, include_unmarked=options.delay <= 0, delete_untagged=options.delete_untagged)


def _single_pass(options: Options) -> bool:
    """No grace period (and a real run): links and blobs are checked and deleted in one pass, without candidate marks
    written only to be read back in the same run (about a fifth of the collection's SQL on 100,000 blobs). A mark
    only starts the grace period: with none, what is unused when its deleting transaction checks it goes, as a mark
    written the moment before would let it; a use committed before that keeps it, one after finds it gone (see
    docs/gc.md)."""
    return options.delay <= 0 and not options.dry_run


def _batches(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


class Collector:
    def __init__(self, store: CollectionQueries, driver: Base, holder: str, progress: Progress | None = None) -> None:
        self._store = store
        self._driver = driver
        self._holder = holder
        """Who runs this collection (host, process), as the lease names it."""
        self._progress: Progress = progress or _Silent()
        self._renewed = 0.0
        self._working = False

    async def _db(self, query: Callable[..., T], *args: object) -> T:
        """A query of the (synchronous) store, in a thread: the server's event loop keeps serving meanwhile."""
        return await asyncio.to_thread(query, *args)

    async def _acquire(self) -> bool:
        """Take or renew the collection's lease; a holder that died on this host is replaced at once."""
        lease = (COLLECTION_LEASE, self._holder, LEASE_SECONDS, this_process(), is_dead)
        return await self._db(self._store.acquire_lease, *lease)

    async def _renew(self) -> None:
        if time.monotonic() - self._renewed < RENEW_AFTER:
            return
        if not await self._acquire():
            raise LeaseLost(f"{self._holder} lost the garbage collection lease")
        self._renewed = time.monotonic()

    async def run(self, options: Options) -> Summary:
        """One collection; Busy when another holds the lease."""
        return await self._leased(functools.partial(self._collect, options))

    async def finish_abandoned(self) -> Summary:
        """Only finish the blob deletions a collection that died left (marked as being deleted, files perhaps
        half gone): until then an upload of such a blob waits and is refused, and the next scheduled collection
        may be a day away. Busy when another holds the lease (it finishes them)."""
        return await self._leased(self._finish_abandoned)

    async def _finish_abandoned(self) -> Summary:
        summary = Summary(dry_run=False)
        await self._finish_blob_deletions(summary)
        return summary

    async def _leased(self, work: Callable[[], Awaitable[Summary]]) -> Summary:
        if self._working:  # this collector's own run: the same holder would renew its lease, then release it under it
            raise Busy(self._holder, time.time())
        self._working = True
        try:
            return await self._leased_anew(work)
        finally:
            self._working = False

    async def _leased_anew(self, work: Callable[[], Awaitable[Summary]]) -> Summary:
        if not await self._acquire():
            current = await self._db(self._store.lease_holder, COLLECTION_LEASE)
            holder, until = current or ("another process", time.time())
            raise Busy(holder, until)
        self._renewed = time.monotonic()
        try:
            return await work()
        finally:
            await self._db(self._store.release_lease, COLLECTION_LEASE, self._holder)

    async def _collect(self, options: Options) -> Summary:
        began = time.monotonic()
        now = time.time()
        cutoff = now - options.delay
        summary = Summary(dry_run=options.dry_run)
        # a walk of the storage driver's files, independent of the rest: it runs beside the database's phases
        temporary = asyncio.ensure_future(self._temporary(now - max(options.delay, MIN_TEMPORARY_AGE), options.dry_run))
        try:
            await self._phases(options, now, cutoff, summary)
        finally:
            count, size = await temporary
        summary.deleted["temporary"] += count
        summary.bytes_freed += size
        summary.seconds = time.monotonic() - began
        return summary

    async def _phases(self, options: Options, now: float, cutoff: float, summary: Summary) -> None:
        summary.scanned = await self._db(self._store.counts)
        if not options.dry_run:
            await self._finish_blob_deletions(summary)
        await self._expire_cached(options, now, summary)
        if options.delete_untagged:
            await self._manifests(options, now, cutoff, summary)
        summary.deleted["v1_images"] += await self._db(self._store.forget_v1_presentations, options.dry_run)
        await self._links(options, now, cutoff, summary)
        await self._blobs(options, now, cutoff, summary)
        if options.upload_age is not None:
            await self.purge_uploads(now - options.upload_age, options.dry_run, summary)
        await self._repositories(options, now, cutoff, summary)

    # --- phases -----------------------------------------------------------------------------------------------
    async def _manifests(self, options: Options, now: float, cutoff: float, summary: Summary) -> None:
        for _round in range(MAX_CASCADES):
            if not options.dry_run:
                await self._db(self._store.mark_manifests, now)
            ids = await self._db(self._store.manifest_candidates, cutoff, _dry_run(options, cutoff))
            deleted = await self._delete_rows("untagged manifests", ids, options, self._store.delete_manifests, cutoff)
            summary.deleted["manifests"] += deleted
            if options.dry_run or not deleted or options.delay > 0:
                return  # what the deletions left unreachable is marked now: a later run deletes it after the delay
            now = time.time()
            cutoff = now

    async def _expire_cached(self, options: Options, now: float, summary: Summary) -> None:
        """Cached manifests not pulled within their window lose their tags and rows, blobs pulled by digest alone
        their links; the phases after it reclaim what that leaves unreferenced. A dry run counts these only, not
        what their expiry would free."""
        if not options.dry_run:
            await self._db(self._store.forget_pulls_outside, [scope.prefix for scope in options.cached])
        for scope in options.cached:
            cutoff = now - max(scope.ttl, options.delay)
            ids = await self._db(self._store.expired_cached_manifests, scope.prefix, cutoff)
            if options.dry_run:
                summary.deleted["manifests"] += len(ids)
            else:
                expire = functools.partial(self._store.expire_cached_manifests, scope.prefix)
                summary.deleted["manifests"] += await self._delete_rows(
                    f"expired cached manifests ({scope.prefix or 'mirror'})", ids, options, expire, cutoff
                )
            summary.deleted["links"] += await self._db(
                self._store.expire_blob_pulls, scope.prefix, cutoff, options.dry_run
            )

    async def _links(self, options: Options, now: float, cutoff: float, summary: Summary) -> None:
        if _single_pass(options):
            await self._db(self._store.unmark_links)
            keys = await self._db(self._store.unreferenced_links)
            delete = self._store.delete_unreferenced_links
        else:
            if not options.dry_run:
                await self._db(self._store.mark_links, now)
            keys = await self._db(self._store.link_candidates, cutoff, _dry_run(options, cutoff))
            delete = self._store.delete_links
        summary.deleted["links"] += await self._delete_rows("unreferenced links", keys, options, delete, cutoff)

    async def _repositories(self, options: Options, now: float, cutoff: float, summary: Summary) -> None:
        """Repositories with nothing in them (no tag, manifest, link, upload session or v1 content) leave the
        catalog once they have been empty for the grace period; a push into one meanwhile keeps it (or, arriving
        after the deletion, creates it again)."""
        if not options.dry_run:
            await self._db(self._store.mark_repositories, now)
        ids = await self._db(self._store.repository_candidates, cutoff, _dry_run(options, cutoff))
        summary.deleted["repositories"] += await self._delete_rows(
            "empty repositories", ids, options, self._store.delete_repositories, cutoff
        )

    async def _delete_rows(
        self,
        phase: str,
        items: Sequence[T],
        options: Options,
        delete: Callable[[Sequence[T], float], int],
        cutoff: float,
    ) -> int:
        self._progress.start(phase, len(items))
        deleted = 0
        try:
            if options.dry_run:
                self._progress.advance(len(items))
                return len(items)
            for batch in _batches(items):
                await self._renew()
                deleted += await self._db(delete, batch, cutoff)
                self._progress.advance(len(batch))
        finally:
            self._progress.finish()
        return deleted

    async def _blobs(self, options: Options, now: float, cutoff: float, summary: Summary) -> None:
        if _single_pass(options):
            await self._db(self._store.unmark_blobs, now)
            self._progress.start("unlinked blobs", None)
            await self._delete_blob_batches(self._unlinked_batches(cutoff), summary)
            return
        if not options.dry_run:
            await self._db(self._store.mark_blobs, now)
        candidates = await self._db(self._store.blob_candidates, cutoff, _dry_run(options, cutoff))
        self._progress.start("unlinked blobs", len(candidates))
        if options.dry_run:
            summary.deleted["blobs"] += len(candidates)
            summary.bytes_freed += sum(size for _, size in candidates)
            self._progress.advance(len(candidates))
            self._progress.finish()
            return
        await self._delete_blob_batches(self._candidate_batches(candidates, cutoff), summary)

    async def _candidate_batches(
        self, candidates: Sequence[tuple[str, int]], cutoff: float
    ) -> AsyncIterator[tuple[Sequence[tuple[str, int]], int]]:
        """Each batch of marked candidates, marked as being deleted where still deletable: (those, candidates)."""
        for batch in _batches(candidates):
            await self._renew()
            yield await self._db(self._store.begin_blob_deletion, [digest for digest, _ in batch], cutoff), len(batch)

    async def _unlinked_batches(self, cutoff: float) -> AsyncIterator[tuple[Sequence[tuple[str, int]], int]]:
        """With no grace period, the next unlinked blobs marked as being deleted, batch after batch."""
        after: str | None = ""
        while after is not None:
            await self._renew()
            doomed, after = await self._db(self._store.begin_unlinked_blob_deletion, after, cutoff, BATCH)
            yield doomed, len(doomed)

    async def _delete_blob_batches(
        self, batches: AsyncIterator[tuple[Sequence[tuple[str, int]], int]], summary: Summary
    ) -> None:
        """A pipeline: the files of `REMOVING_AT_ONCE` batches go while the next batch is marked as being deleted,
        and a batch's rows go once its files are gone, while the next batches' files go. A batch whose files
        failed to go stays marked as being deleted: the next collection finishes it (`_finish_blob_deletions`)."""
        removing: list[tuple[asyncio.Future[None], Sequence[tuple[str, int]]]] = []
        ending: list[asyncio.Future[None]] = []
        try:
            try:
                async for doomed, examined in batches:
                    self._progress.advance(examined)
                    if not doomed:
                        continue
                    if len(removing) >= REMOVING_AT_ONCE:
                        await removing[0][0]
                        _, done = removing.pop(0)
                        ending.append(asyncio.ensure_future(self._end_blob_deletion(done, summary)))
                    removing.append((asyncio.ensure_future(self._remove_blob_files(doomed)), doomed))
            except asyncio.CancelledError:
                for future, _ in removing:
                    future.cancel()  # its removal process is stopped; its rows stay marked
                raise
            except BaseException:
                await self._settle(removing, ending, summary)  # the batches under way end; this error is the one
                raise
            failure = await self._settle(removing, ending, summary)
            if failure is not None:
                raise failure
        finally:
            self._progress.finish()

    async def _settle(
        self,
        removing: list[tuple[asyncio.Future[None], Sequence[tuple[str, int]]]],
        ending: list[asyncio.Future[None]],
        summary: Summary,
    ) -> BaseException | None:
        """Wait for the removals under way, end the batches whose files are gone, and wait for every end, even
        when one fails, so nothing is left running; the first error."""
        failures: list[BaseException] = []
        for future, doomed in removing:
            try:
                await future
            except Exception as failure:
                failures.append(failure)
                continue
            ending.append(asyncio.ensure_future(self._end_blob_deletion(doomed, summary)))
        removing.clear()
        ended = await asyncio.gather(*ending, return_exceptions=True)
        failures += [outcome for outcome in ended if isinstance(outcome, BaseException)]
        return failures[0] if failures else None

    async def _finish_blob_deletions(self, summary: Summary) -> None:
        """Blobs an earlier collection marked as being deleted and did not finish (it died)."""
        leftovers = await self._db(self._store.blobs_being_deleted)
        for batch in _batches(leftovers):
            await self._renew()
            await self._delete_blobs(batch, summary)

    async def _delete_blobs(self, doomed: Sequence[tuple[str, int]], summary: Summary) -> None:
        """Delete the files of blobs marked as being deleted, then their rows."""
        await self._remove_blob_files(doomed)
        await self._end_blob_deletion(doomed, summary)

    async def _remove_blob_files(self, doomed: Sequence[tuple[str, int]]) -> None:
        """In bulk (`Base.remove_many`), under the lease: renewed while the removal runs, however long (a stopped
        removal process, a hung object store), and the removal stopped if it is lost. Otherwise the lease ran out
        while files were still being removed, another collection finished these rows, an upload placed a new copy of
        a blob, and this removal then took that copy away."""
        paths = [blob_path(stored_digest(digest)) for digest, _ in doomed]
        removal = asyncio.create_task(self._driver.remove_many(paths))
        try:
            while not (await asyncio.wait({removal}, timeout=RENEW_AFTER))[0]:
                await self._renew()
            removal.result()
        except BaseException:
            removal.cancel()  # the driver stops its removal process
            with contextlib.suppress(BaseException):
                await removal
            raise

    async def _end_blob_deletion(self, doomed: Sequence[tuple[str, int]], summary: Summary) -> None:
        """The rows of blobs whose files are deleted."""
        await self._db(self._store.end_blob_deletion, [digest for digest, _ in doomed])
        summary.deleted["blobs"] += len(doomed)
        summary.bytes_freed += sum(size for _, size in doomed)

    async def _remove(self, path: str) -> bool:
        """Delete an object; False if it was gone already."""
        try:
            await self._driver.remove(path)
        except exceptions.FileNotFoundError:
            return False
        return True

    async def purge_uploads(self, started_before: float, dry_run: bool, summary: Summary) -> None:
        """End upload sessions begun before `started_before` that nobody writes to, and delete their data; also
        data of sessions the database no longer knows (a crash between the two), once as old, and v1 pushes begun
        as long ago and never completed (their layers go with the next collection)."""
        self._progress.start("expired uploads", None)
        try:
            ended = await self._db(self._store.expired_uploads, started_before, dry_run)
            for upload in ended:
                if dry_run or await self._remove(upload_area(upload.id)):
                    summary.bytes_freed += upload.size
            summary.deleted["uploads"] += len(ended)
            summary.deleted["v1_images"] += await self._db(self._store.expire_v1_pushes, started_before, dry_run)
            self._progress.advance(len(ended))
            known = await self._db(self._store.upload_ids)
            for orphan in await self._orphaned_uploads(known | {u.id for u in ended}, started_before):
                if dry_run or await self._remove(orphan):
                    summary.deleted["uploads"] += 1
                    self._progress.advance(1)
        finally:
            self._progress.finish()

    async def _orphaned_uploads(self, known: set[str], started_before: float) -> list[str]:
        try:
            folders = await self._driver.list_directory("uploads")
        except exceptions.FileNotFoundError:
            return []
        orphans = []
        for folder in folders:  # `uploads/<id>`: a session's object, or its folder (see `upload_area`)
            name = folder.rsplit("/", 1)[-1]
            if name in known:
                continue
            try:
                stat = await self._driver.stat(upload_path(name))
            except exceptions.FileNotFoundError:
                continue  # a session being created, or not a session's folder at all
            except exceptions.WrongArgumentsError:
                continue
            if stat.mtime < started_before:
                orphans.append(folder)
        return orphans

    async def _temporary(self, older_than: float, dry_run: bool) -> tuple[int, int]:
        """The driver's temporary files older than `older_than`: how many, and their bytes."""
        return await self._driver.purge_temporary(older_than, dry_run)
