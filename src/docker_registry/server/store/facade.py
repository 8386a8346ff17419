"""The metadata store for the event loop: the same queries as coroutines, each run in a worker thread, so a
database wait never blocks the loop. The registry logic talks to the store only through this.

Reads and writes run in thread pools of their own: writes waiting for a lock (another process writing, a backup
holding the database) can occupy every writer thread, and pulls still find free readers. Other blocking work
(hashing, file I/O) keeps asyncio's default pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

from docker_registry.core.digest import Digest

from .batching import Followup, WriteQueue
from .inline import InlineReads
from .metadata import MetadataStore, blob_or_manifest_in, blob_params
from .models import EventRecord, Manifest, Referrer, StoredManifest, Upload
from .statistics import Inventory
from .uploads import Appending, Claim

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_READ_THREADS = 8


class AsyncMetadataStore:
    def __init__(
        self, store: MetadataStore, read_threads: int = DEFAULT_READ_THREADS, inline: InlineReads | None = None
    ) -> None:
        self.sync = store
        """The synchronous store, for callers that are in a thread already."""
        self._inline = inline
        """SQLite: the blob look-up of a HEAD on the loop's thread, when it can answer without waiting (`inline`)."""
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="db-read")
        self._writes = WriteQueue(store)

    async def _read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, partial(query, *args, **kwargs))

    async def _write(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A durable write, committed with the others waiting beside it (see `batching`)."""
        result: T = await self._writes.submit(partial(query, *args, **kwargs), durable=True)
        return result

    async def _session_write(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A write of upload-session bookkeeping, which need not wait for the disk (see `engine.write_transaction`)."""
        result: T = await self._writes.submit(partial(query, *args, **kwargs), durable=False)
        return result

    async def read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any query of the synchronous store (`self.sync`), in the readers' pool: for features with queries of
        their own (v1), so this facade need not repeat each of them."""
        return await self._read(query, *args, **kwargs)

    async def write(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any write method of the synchronous store, durable and group-committed (see `read`)."""
        return await self._write(query, *args, **kwargs)

    async def write_transient(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any write method of state a power loss may take (a claim, a hint), committed without waiting for the
        disk (see `engine.write_transaction`)."""
        return await self._session_write(query, *args, **kwargs)

    async def rehearse(self, writes: Sequence[Callable[[], object]]) -> None:
        """Write methods of the synchronous store run and rolled back (`StoreBase.rehearse`), in the readers' pool:
        not through the write queue, whose batches must commit."""
        await self._read(self.sync.rehearse, writes)

    @property
    def writer_lease(self) -> float:
        return self.sync.writer_lease

    def close(self) -> None:
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._writes.close()
        if self._inline is not None:
            self._inline.close()
        self.sync.close()

    # repositories and tags
    async def repository_exists(self, name: str) -> bool:
        return await self._read(self.sync.repository_exists, name)

    async def repositories(self, last: str | None, limit: int) -> list[str]:
        return await self._read(self.sync.repositories, last, limit)

    async def tag_digest(self, repository: str, tag: str) -> Digest | None:
        return await self._read(self.sync.tag_digest, repository, tag)

    async def tags(self, repository: str, last: str | None, limit: int | None) -> list[str] | None:
        return await self._read(self.sync.tags, repository, last, limit)

    async def delete_tag(self, repository: str, tag: str, events: Sequence[EventRecord] = ()) -> bool:
        return await self._write(self.sync.delete_tag, repository, tag, events)

    # manifests
    async def manifest(self, repository: str, digest: Digest) -> StoredManifest | None:
        return await self._read(self.sync.manifest, repository, digest)

    async def referrers(
        self,
        repository: str,
        subject: Digest,
        artifact_type: str | None,
        after: Digest | None = None,
        limit: int | None = None,
    ) -> list[Referrer]:
        return await self._read(self.sync.referrers, repository, subject, artifact_type, after, limit)

    async def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        tag_names: Sequence[str] = (),
        events: Sequence[EventRecord] = (),
        check_references: bool = True,
    ) -> None:
        await self._write(self.sync.put_manifest, repository, manifest, tag_names, events, check_references)

    async def delete_manifest(
        self,
        repository: str,
        digest: Digest,
        events: Sequence[EventRecord] = (),
        tag_events: Callable[[Sequence[str]], Sequence[EventRecord]] | None = None,
    ) -> bool:
        return await self._write(self.sync.delete_manifest, repository, digest, events, tag_events)

    # blobs
    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        return await self._read(self.sync.blob_size, repository, digest)

    async def blob_or_manifest(self, repository: str, digest: Digest) -> tuple[int | None, StoredManifest | None, bool]:
        if self._inline is not None:
            found = self._inline.run(partial(blob_or_manifest_in, params=blob_params(repository, digest)))
            if found is not None:
                return found
        return await self._read(self.sync.blob_or_manifest, repository, digest)

    async def known_blob_size(self, digest: Digest) -> int | None:
        return await self._read(self.sync.known_blob_size, digest)

    async def link_blob(self, repository: str, digest: Digest, size: int, *, recorded: bool = False) -> bool:
        return await self._write(self.sync.link_blob, repository, digest, size, recorded=recorded)

    async def mount_blob(
        self, repository: str, digest: Digest, source: str, events: Sequence[EventRecord] = ()
    ) -> bool:
        return await self._write(self.sync.mount_blob, repository, digest, source, events)

    async def touch_link(self, repository: str, digest: Digest) -> None:
        await self._session_write(self.sync.touch_link, repository, digest)

    async def pin_blob(self, digest: Digest, size: int, token: str) -> bool:
        return await self._session_write(self.sync.pin_blob, digest, size, token)

    async def unpin_blob(self, digest: Digest, token: str) -> None:
        await self._session_write(self.sync.unpin_blob, digest, token)

    async def unlink_blob(self, repository: str, digest: Digest, events: Sequence[EventRecord] = ()) -> bool:
        return await self._write(self.sync.unlink_blob, repository, digest, events)

    # uploads
    async def upload(self, upload_id: str) -> Upload | None:
        return await self._read(self.sync.upload, upload_id)

    async def create_upload(self, upload_id: str, repository: str, owner: str | None = None) -> None:
        await self._session_write(self.sync.create_upload, upload_id, repository, owner)

    async def claim_upload(
        self,
        upload_id: str,
        repository: str,
        size: int | None,
        token: str,
        process: str | None = None,
        takeover: str | None = None,
    ) -> Upload | None:
        return await self._session_write(self.sync.claim_upload, upload_id, repository, size, token, process, takeover)

    async def append_small(self, claim: Claim, append: Appending) -> tuple[int, bool, int] | None:
        return await self._session_write(self.sync.append_small, claim, append)

    async def claim_upload_pinned(
        self,
        upload_id: str,
        repository: str,
        size: int | Callable[[], int | None],
        token: str,
        process: str | None,
        digest: Digest,
        blob_size: int | None = None,
    ) -> tuple[Upload | None, bool]:
        return await self._session_write(
            self.sync.claim_upload_pinned, upload_id, repository, size, token, process, digest, blob_size
        )

    async def renew_upload(self, upload_id: str, token: str) -> bool:
        return await self._session_write(self.sync.renew_upload, upload_id, token)

    async def release_upload(self, upload_id: str, token: str, size: int) -> bool:
        return await self._session_write(self.sync.release_upload, upload_id, token, size)

    async def delete_upload(self, upload_id: str) -> Upload | None:
        return await self._session_write(self.sync.delete_upload, upload_id)

    async def claim_upload_pinned_then(
        self,
        then: Callable[[tuple[Upload | None, bool]], T | Followup[T]],
        upload_id: str,
        repository: str,
        size: int | Callable[[], int | None],
        token: str,
        process: str | None,
        digest: Digest,
        blob_size: int | None = None,
    ) -> T:
        """`claim_upload_pinned` (`size` may be a blocking read, see there), then the blocking step `then` on its
        result, in the writer's thread once the claim and pin are committed (`WriteQueue.submit`): what `then`
        returns, or what the write it returns (a `Followup`) answers."""
        claim = partial(self.sync.claim_upload_pinned, upload_id, repository, size, token, process, digest, blob_size)
        result: T = await self._writes.submit(claim, durable=False, then=then)
        return result

    async def finish_upload(
        self,
        upload_id: str,
        repository: str,
        digest: Digest,
        size: int,
        token: str | None,
        events: Sequence[EventRecord] = (),
    ) -> bool:
        return await self._write(self.sync.finish_upload, upload_id, repository, digest, size, token, events)

    # events (notifications)
    async def record_events(self, records: Sequence[EventRecord]) -> None:
        """Events with no change to go with (pulls): queued with the other writes, not waiting for the disk."""
        await self._session_write(self.sync.record_events, records)

    # statistics (metrics, health)
    async def inventory(self) -> Inventory:
        return await self._read(self.sync.inventory)

    async def schema_revision(self) -> str | None:
        return await self._read(self.sync.schema_revision)

    async def refuses_writes(self) -> str | None:
        return await self._read(self.sync.refuses_writes)
