"""`docker-registry fsck`: is every blob the store serves really in storage with the bytes its digest promises, and
does every manifest reference only what its repository can serve?

Blobs are read through the storage driver, so the check works on any backend. With `repair`, a blob whose bytes
do not match is moved aside (to `lost+found/`, through the driver: never deleted, an operator may want it back),
and a corrupt or missing blob is forgotten by the metadata store, so the registry answers 404 for it instead of
serving wrong bytes or claiming it has it (a client's HEAD would then skip pushing it again). Manifests that name
such a blob stay: they are reported as broken, and pushing the blob again makes them whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, blob_path
from docker_registry.core.driver import Base

from ..registry.manifests import digest_of
from ..store.inventory import InventoryQueries, StoredBlob
from .console import Console, Phase, human_bytes
from .content import hash_object, in_parallel

PAGE = 500
LOST_AND_FOUND = "lost+found"


@dataclass
class FsckResult:
    corrupt: dict[Digest, str] = field(default_factory=dict)
    """Blob -> what is wrong with its bytes."""
    missing: set[Digest] = field(default_factory=set)
    unreadable: set[Digest] = field(default_factory=set)
    """Blobs storage failed to read (an I/O error, a backend down): neither verified nor repaired."""
    counts: dict[str, int] = field(default_factory=dict)
    read_bytes: int = 0
    remaining: int = 0
    """Problems left when the command ends: damaged blobs not repaired, invalid manifests, dangling references
    (after a repair, those of the images it broke: they need their blobs pushed again). Non-zero: exit status 1."""

    @property
    def damaged(self) -> set[Digest]:
        return set(self.corrupt) | self.missing


def lost_and_found_path(digest: Digest, now: float) -> str:
    """Where a corrupt blob is moved: one folder per digest, one file per repair, so nothing is ever overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{LOST_AND_FOUND}/{digest.algorithm}/{digest.encoded}/{stamp}-data"


async def fsck(
    driver: Base,
    inventory: InventoryQueries,
    console: Console,
    repair: bool,
    jobs: int,
    fetched_on_demand: Callable[[str], bool] = lambda _name: False,
) -> FsckResult:
    """`fetched_on_demand`: whether a repository is a pull-through cache's, whose manifests name blobs and
    children that are fetched when first pulled: a reference to one not fetched yet is no problem there."""
    result = FsckResult()
    blob_count, blob_bytes, manifest_count = await asyncio.to_thread(inventory.totals)
    console.note(f"{blob_count} blobs ({human_bytes(blob_bytes)}) and {manifest_count} manifests to check")
    with console.phase("blobs", blob_count) as phase:
        await _check_blobs(driver, inventory, console, phase, result, jobs)
        result.read_bytes, blob_count = phase.bytes, phase.done
    with console.phase("manifests", manifest_count) as phase:
        bad_manifests = await _check_manifests(inventory, console, phase)
        manifest_count = phase.done
    damaged = result.damaged
    moved = await _repair(driver, inventory, console, result) if repair and damaged else 0
    abandoned = await _abandoned_deletions(inventory, console, repair)
    dangling = await asyncio.to_thread(inventory.dangling_references)
    not_fetched = [ref for ref in dangling if fetched_on_demand(ref.repository) and ref.digest not in damaged]
    if not_fetched:
        console.note(f"{len(not_fetched)} references of cached manifests not fetched yet: a pull fetches them")
        fetched_later = set(not_fetched)
        dangling = [ref for ref in dangling if ref not in fetched_later]
    for ref in dangling:
        where = f"{ref.repository}@{ref.manifest}"
        if ref.kind == "manifest":
            console.problem(f"{where} references manifest {ref.digest}, which the repository lacks")
        elif ref.digest in damaged:  # only after a repair: the blob was forgotten just now
            console.problem(f"{where} lacks blob {ref.digest} (removed as damaged): push it again")
        else:
            console.problem(f"{where} references blob {ref.digest}, which the repository does not serve")
    broken = await asyncio.to_thread(
        inventory.images_using, damaged, [(ref.repository, ref.manifest) for ref in dangling]
    )
    for image in broken:
        for name in image.names():
            console.say(f"broken image: {name}")
    result.remaining = bad_manifests + len(dangling) + len(result.unreadable) + (0 if repair else len(damaged))
    result.remaining += abandoned
    result.counts = {
        "blobs scanned": blob_count,
        "blobs verified": blob_count - len(damaged) - len(result.unreadable),
        "corrupt": len(result.corrupt),
        "missing": len(result.missing),
        "unreadable": len(result.unreadable),
        "manifests checked": manifest_count,
        "manifests invalid": bad_manifests,
        "dangling references": len(dangling),
        "not fetched yet (cached)": len(not_fetched),
        "images broken": len(broken),
        "deletions unfinished": abandoned,
    }
    if repair:
        result.counts["blobs moved aside"] = moved
        result.counts["blobs forgotten"] = len(damaged)
    return result


async def _blobs(inventory: InventoryQueries) -> AsyncIterator[StoredBlob]:
    after: str | None = None
    while True:
        page = await asyncio.to_thread(inventory.blob_page, after, PAGE)
        for blob in page:
            yield blob
        if len(page) < PAGE:
            return
        after = str(page[-1].digest)


async def _check_blobs(
    driver: Base, inventory: InventoryQueries, console: Console, phase: Phase, result: FsckResult, jobs: int
) -> None:
    async def check(blob: StoredBlob) -> None:
        try:
            hasher = await hash_object(driver, blob_path(blob.digest), blob.digest.algorithm, phase)
        except exceptions.FileNotFoundError:
            if await _still_known(inventory, blob.digest):  # else deleted meanwhile (a delete, garbage collection)
                result.missing.add(blob.digest)
                console.problem(f"blob {blob.digest} is missing from storage")
        except (OSError, exceptions.UnspecifiedError) as e:  # maybe passing: report it, repair nothing
            result.unreadable.add(blob.digest)
            console.problem(f"blob {blob.digest} could not be read: {e}")
        else:
            if hasher.digest() != blob.digest or hasher.size != blob.size:
                what = f"content hashes to {hasher.digest()} ({hasher.size} bytes, {blob.size} recorded)"
                result.corrupt[blob.digest] = what
                console.problem(f"blob {blob.digest} is corrupt: {what}")
        phase.advance()

    await in_parallel(_blobs(inventory), check, jobs)


async def _still_known(inventory: InventoryQueries, digest: Digest) -> bool:
    return digest in await asyncio.to_thread(inventory.known_blobs, [digest])


async def _check_manifests(inventory: InventoryQueries, console: Console, phase: Phase) -> int:
    """Manifest bytes live in the database: check they still hash to their digest. Returns how many do not."""
    bad = 0
    after = 0
    while True:
        page = await asyncio.to_thread(inventory.manifest_page, after, PAGE)
        for manifest in page:
            if digest_of(manifest.content, manifest.digest.algorithm) != manifest.digest:
                bad += 1
                console.problem(f"manifest {manifest.repository}@{manifest.digest}: stored bytes do not match")
            phase.advance()
        if len(page) < PAGE:
            return bad
        after = page[-1].id


async def _repair(driver: Base, inventory: InventoryQueries, console: Console, result: FsckResult) -> int:
    """Move corrupt blobs aside, then forget every damaged blob; returns how many were moved.

    A push never replaces a corrupt blob (a blob in storage with a row is taken as stored), but a missing one is
    published again by the next push of it: such a blob is checked once more and left alone if it is whole now."""
    moved = 0
    now = time.time()
    for digest in sorted(result.damaged, key=str):
        if digest in result.missing and await _whole(driver, digest):
            console.say(f"blob {digest} was pushed again meanwhile and is whole: left alone")
            continue
        if digest in result.corrupt:
            aside = lost_and_found_path(digest, now)
            try:
                await driver.move(blob_path(digest), aside)
            except exceptions.FileNotFoundError:
                pass  # gone meanwhile: forgetting it is all that is left to do
            else:
                moved += 1
                console.say(f"repaired: corrupt blob {digest} moved to {aside}")
        links = await asyncio.to_thread(inventory.forget_blob, digest)
        console.say(f"repaired: blob {digest} is no longer served (it was linked in {links} repositories)")
    return moved


async def _abandoned_deletions(inventory: InventoryQueries, console: Console, repair: bool) -> int:
    """Report the blobs a garbage collection that stopped (no collection holds its lease) left marked as being
    deleted: uploads of them are refused until a collection finishes them. A repair leaves them to it: a registry
    process finishes them within seconds of starting and every few seconds after, and `garbage-collect` does."""
    digests = await asyncio.to_thread(inventory.abandoned_deletions)
    for digest in digests:
        console.problem(
            f"blob {digest} is left half-deleted by a garbage collection that stopped: uploads of it are "
            "refused until a collection finishes deleting it"
        )
    if digests:
        console.say(
            f"{len(digests)} blob deletions unfinished{' (left to garbage collection)' if repair else ''}: a running "
            "registry finishes them within seconds, or run `docker-registry garbage-collect`"
        )
    return len(digests)


async def _whole(driver: Base, digest: Digest) -> bool:
    try:
        return (await hash_object(driver, blob_path(digest), digest.algorithm)).digest() == digest
    except exceptions.FileNotFoundError:
        return False
