"""One manifest fetch for the whole registry: however many workers and nodes miss the same manifest at once, one
of them claims its fetch in the metadata store and asks the upstream; the others wait for that claim to end and
then find the manifest stored (or, when that fetch failed, claim it in turn).

Blobs have their own single flight (`flight`), which also lets every waiting client stream the bytes; a manifest
is a few kilobytes, fetched whole, so a claim row that every worker of every node sees is all it needs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from ..registry import process_identity
from ..store.facade import AsyncMetadataStore

LEASE = 120.0
"""Seconds a claim holds (longer than a manifest fetch may take): a claim still there after that belongs to a worker
that died, and another takes over. One of a dead process on this host is taken over at once: a restart while the
upstream was slow made the next pull of that manifest wait up to the lease, with no word why."""
POLL = 0.02
"""Seconds between two looks at a claim held elsewhere."""


class Claims:
    def __init__(self, store: AsyncMetadataStore) -> None:
        self._store = store
        self._owner = f"{process_identity.this_process() or '-'} {uuid.uuid4().hex}"
        """This worker's process (for the others to tell it died, on this host) and a token of its own."""

    async def once(
        self, key: str, needed: Callable[[bool], Awaitable[bool]], work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `work` while it is `needed`, in one worker of the registry at a time: while another holds the claim
        on `key`, wait for it to end and look again. `needed` is told whether this caller waited for another's work
        (which may settle more than the first look did). `work`'s errors reach the caller whose worker ran it."""
        sync = self._store.sync
        waited = False
        while await needed(waited):
            if await self._store.write_transient(sync.claim_proxy_fetch, key, self._owner, time.time(), LEASE):
                try:
                    if await needed(waited):
                        await work()
                finally:
                    await self._store.write_transient(sync.release_proxy_fetch, key, self._owner)
                return
            while (owner := await self._store.read(sync.proxy_fetch_owner, key, time.time())) is not None:
                if process_identity.is_dead(owner.split(" ", 1)[0]):  # killed mid-fetch (a restart): not its lease
                    await self._store.write_transient(sync.release_proxy_fetch, key, owner)
                    break
                await asyncio.sleep(POLL)
            waited = True
