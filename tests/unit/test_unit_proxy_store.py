"""Store methods of the pull-through cache. `StoreBase.rehearse`: write methods run in a transaction that is rolled
back, what the cache does at each worker's start so that a client's first pull does not pay for compiling
statements; it must change nothing. `blob_sizes`: a cold blob request's first look, in one database hop."""

from __future__ import annotations

import asyncio
import hashlib
import time
from functools import partial
from typing import Any

import pytest
from proc_stat import dead_identity

from docker_registry.core.digest import Digest, parse_digest
from docker_registry.server.proxy.claims import Claims
from docker_registry.server.registry import process_identity
from docker_registry.server.store import manifests, migrate
from docker_registry.server.store.collection import CollectionQueries
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import Descriptor, Manifest


def digest(data: bytes) -> Digest:
    return parse_digest("sha256:" + hashlib.sha256(data).hexdigest())


def image(layer: bytes) -> Manifest:
    raw = b"image" + layer
    return Manifest(
        raw, "application/vnd.oci.image.manifest.v1+json", digest(raw), [Descriptor("l", digest(layer), len(layer))]
    )


def test_rehearsed_writes_change_nothing_and_leave_their_statements_compiled(
    stores: tuple[MetadataStore, CollectionQueries], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = stores
    monkeypatch.setattr(manifests._INSERT_MANIFEST, "_sqlite", None)  # as in a freshly started worker
    manifest, layer = image(b"layer"), digest(b"layer")
    now = time.time()
    store.rehearse(
        [
            partial(store.claim_proxy_fetch, "hub/app@x", "owner", now, 60.0),
            partial(store.put_manifest, "hub/app", manifest, ["v1"], (), False),
            partial(store.pin_blob, layer, 5, "token"),
            partial(store.link_blob, "hub/app", layer, 5),
            partial(store.mark_proxy_tag_checked, "hub/app", "v1", now),
        ]
    )
    assert store.repositories(None, 100) == []
    assert store.tag_digest("hub/app", "v1") is None
    assert store.manifest("hub/app", manifest.digest) is None
    assert store.known_blob_size(layer) is None
    assert not store.proxy_fetch_claimed("hub/app@x", now)
    assert manifests._INSERT_MANIFEST._sqlite is not None  # compiled by the rehearsal: the first push need not
    # and the store writes for real afterwards, on the same connections
    assert store.claim_proxy_fetch("hub/app@x", "owner", now, 60.0)
    store.put_manifest("hub/app", manifest, ["v1"], (), False)
    assert store.tag_digest("hub/app", "v1") == manifest.digest


def test_a_write_that_refuses_does_not_keep_the_others_from_being_rehearsed(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    store, _ = stores
    manifest = image(b"other")
    refused = partial(store.put_manifest, "hub/app", manifest, ["v1"], (), True)  # its layer is not stored
    claimed = partial(store.claim_proxy_fetch, "key", "owner", time.time(), 60.0)
    store.rehearse([refused, claimed])  # no error raised: a rehearsal only prepares
    assert store.repositories(None, 100) == []
    assert not store.proxy_fetch_claimed("key", time.time())


def test_blob_sizes_tells_a_linked_blob_from_one_stored_for_another_repository(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    try:
        _blob_sizes(store)
    finally:
        store.close()


def _blob_sizes(store: MetadataStore) -> None:
    layer = digest(b"layer")
    assert store.blob_sizes("hub/app", layer, "hub/") == (None, None, False, False)
    store.link_blob("hub/other", layer, 5)
    # stored for another repository: the cache links it rather than fetching it again, once it knows the upstream
    # has it for this name (here, by asking it)
    assert store.blob_sizes("hub/app", layer, "hub/") == (None, 5, False, True)
    store.put_manifest("hub/app", image(b"layer"), ["v1"], (), False)  # cached from the upstream, unlinked layer
    assert store.blob_sizes("hub/app", layer, "hub/") == (None, 5, True, True)  # named by a manifest cached here
    assert store.blob_sizes("hub/third", layer, "hub/") == (None, 5, False, True)
    # linked by no repository of this cache: the manifest's claim alone must not open another cache's (or a local
    # repository's) blob
    assert store.blob_sizes("ghcr/app", layer, "ghcr/") == (None, 5, False, False)
    store.put_manifest("ghcr/app", image(b"layer"), ["v1"], (), False)
    assert store.blob_sizes("ghcr/app", layer, "ghcr/") == (None, 5, True, False)
    assert store.blob_sizes("ghcr/app", layer, "") == (None, 5, True, True)  # a mirror: every repository is its own
    # a layer with `urls` proves nothing: upstreams take those in manifests without having them
    raw = b"foreign"
    foreign = Manifest(raw, "application/vnd.oci.image.manifest.v1+json", digest(raw))
    foreign.foreign.append(Descriptor("l", layer, 5, ("https://x",)))
    store.put_manifest("hub/fake", foreign, ["v1"], (), False)
    assert store.blob_sizes("hub/fake", layer, "hub/") == (None, 5, False, True)
    store.link_blob("hub/app", layer, 5)
    assert store.blob_sizes("hub/app", layer, "hub/") == (5, None, False, True)


class _Direct:
    """The async store facade's calls, run in place (the claims' logic is what is under test, on real SQLite)."""

    def __init__(self, store: MetadataStore) -> None:
        self.sync = store

    async def write_transient(self, call: Any, *args: Any) -> Any:
        return call(*args)

    async def read(self, call: Any, *args: Any) -> Any:
        return call(*args)


async def test_a_manifest_fetch_claimed_by_a_dead_process_is_taken_over_at_once(
    stores: tuple[MetadataStore, CollectionQueries],
) -> None:
    """A worker killed mid-fetch (a restart while the upstream was slow) left its claim: the next pull of that
    manifest waited out the 120 s lease, saying nothing. A claim naming a process of this host that has died is
    taken over at once; one of a live process is waited for."""
    store, _ = stores
    me, dead = process_identity.this_process(), dead_identity()
    if me is None or dead is None:
        pytest.skip("needs /proc to tell a claim's process")
    assert store.claim_proxy_fetch("hub/app:v1", f"{dead} token", time.time(), 120.0)
    done: list[bool] = []

    async def needed(_waited: bool) -> bool:
        return not done

    async def work() -> None:
        done.append(True)

    await asyncio.wait_for(Claims(_Direct(store)).once("hub/app:v1", needed, work), 5)  # type: ignore[arg-type]
    assert done == [True]
    assert not store.proxy_fetch_claimed("hub/app:v1", time.time()), "released after the work"
    assert store.claim_proxy_fetch("hub/app:v2", f"{me} token", time.time(), 120.0)
    with pytest.raises(TimeoutError):  # a live claimant is waited for
        await asyncio.wait_for(Claims(_Direct(store)).once("hub/app:v2", needed_again(), work), 0.5)


def needed_again() -> Any:
    async def needed(_waited: bool) -> bool:
        return True

    return needed
