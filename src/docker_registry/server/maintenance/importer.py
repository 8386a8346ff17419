"""`docker-registry import --from distribution`: a CNCF Distribution storage tree into the metadata store.

Everything goes through the checks a push goes through: each blob a repository links is hashed and must match
its digest before it gets a row (size from the file); each manifest's bytes are read from the tree's blob store,
must hash to their digest, and are parsed and validated by the registry's own parser, so references, subject and
artifact type are indexed as for a push, and the store checks the references (blobs linked to the repository with
the sizes the manifest gives, children present) in the transaction that stores it. Anything that fails a check is
reported and skipped, never imported half: a link to a blob that is not there, bytes that do not match, a
manifest whose references cannot be served, a tag pointing at a manifest the repository does not have.

In place (the tree is this registry's own storage), blobs stay where they are and are only read; otherwise each
is copied verified into this registry's storage and the tree is left untouched. Only what the store lacks is
written, so running the import again changes nothing, and an interrupted import resumes where it stopped. A tag
this registry has already is left alone, even when the tree points it elsewhere: after a first import, a tag moves
here only by a push, which is newer than the tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, blob_path
from docker_registry.core.driver import Base

from ..registry.errors import RegistryError
from ..registry.manifests import digest_of, parse_manifest
from ..registry.names import is_name
from ..store.inventory import InventoryQueries, RepositoryContent
from ..store.metadata import MetadataStore
from ..store.models import BadReference, Manifest
from .console import Console, Phase
from .content import ContentMismatch, copy_verified, hash_object, in_parallel
from .distribution import Repository, check_regular_file, repositories

BATCH = 200
"""Writes committed together: one transaction (one fsync) per batch instead of one per row."""
_BEING_DELETED = (
    "garbage collection here is deleting it (its file is going); not imported: run the import again once the "
    "collection finished"
)


@dataclass
class ImportResult:
    counts: dict[str, int] = field(default_factory=dict)
    read_bytes: int = 0


@dataclass
class _Plan:
    """What one repository needs written, worked out against what the store holds already."""

    repository: Repository
    content: RepositoryContent
    tags: dict[Digest, list[str]] = field(default_factory=dict)
    """Manifest -> the tags to point at it (tags the store does not have yet)."""
    manifests: list[Digest] = field(default_factory=list)
    """Manifests to store, or stored already but named by a new tag."""


class Importer:
    def __init__(
        self,
        source: Base,
        target: Base,
        store: MetadataStore,
        inventory: InventoryQueries,
        console: Console,
        *,
        in_place: bool,
        jobs: int,
        max_manifest_bytes: int,
    ) -> None:
        self.source = source
        self.target = target
        self.store = store
        self.inventory = inventory
        self.console = console
        self.in_place = in_place
        self.jobs = jobs
        self.max_manifest_bytes = max_manifest_bytes
        self.counts: dict[str, int] = {}
        self.sizes: dict[Digest, int] = {}
        """Blobs the store has or that were verified now: what repositories may link."""
        self.recorded: set[Digest] = set()
        """Those of `sizes` taken as stored from the store's rows, not read now."""

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    async def run(self) -> ImportResult:
        repos = await self._scan()
        read_bytes = 0
        missing, phase_bytes = await self._blobs(repos)
        read_bytes += phase_bytes
        plans = [await self._plan(repo, missing) for repo in repos]
        manifests, phase_bytes = await self._read_manifests(plans)
        read_bytes += phase_bytes
        await self._commit([write for plan in plans for write in self._writes(plan, manifests)])
        names = ["repositories", "blobs scanned", "blobs already present", "blobs verified"]
        names += [] if self.in_place else ["blobs copied"]
        names += ["links imported", "manifests imported", "tags imported", "tags kept"]
        counts = {name: self.counts.get(name, 0) for name in names}
        return ImportResult(counts, read_bytes)

    # --- reading the tree ---------------------------------------------------------------------------------------
    async def _scan(self) -> list[Repository]:
        found = []
        with self.console.phase("repositories found") as phase:
            async for repo in repositories(self.source, self.console.problem):
                for problem in repo.problems:
                    self.console.problem(f"{repo.name}: {problem}")
                if not is_name(repo.name):
                    self.console.problem(f"{repo.name}: not a valid repository name; skipped")
                    continue
                found.append(repo)
                phase.advance()
        self.counts["repositories"] = len(found)
        return found

    async def _blobs(self, repos: list[Repository]) -> tuple[set[Digest], int]:
        """Verify (and copy) every linked blob the store lacks, noting the sizes of those usable; returns those
        the tree does not hold, and the bytes read."""
        linked = {d for repo in repos for d in repo.layers}
        known = await asyncio.to_thread(self.inventory.known_blobs, linked)
        self.counts["blobs scanned"] = len(linked)
        self.counts["blobs already present"] = len(known)
        self.sizes.update(known)
        self.recorded.update(known)
        deleting = await asyncio.to_thread(self.inventory.blobs_being_deleted, linked - set(known))
        for digest in sorted(deleting, key=str):
            self.console.problem(f"blob {digest}: {_BEING_DELETED}")
        missing: set[Digest] = set()
        todo = sorted(linked - set(known) - deleting, key=str)
        with self.console.phase("blobs", len(todo)) as phase:

            async def verify(digest: Digest) -> None:
                try:
                    self.sizes[digest] = await self._verify_blob(digest, phase)
                except exceptions.FileNotFoundError:
                    missing.add(digest)
                except ContentMismatch as e:
                    self.console.problem(f"blob {digest}: {e}; not imported")
                except (OSError, exceptions.UnspecifiedError) as e:
                    self.console.problem(f"blob {digest} could not be read or copied: {e}; not imported")
                phase.advance()

            await in_parallel(todo, verify, self.jobs)
            return missing, phase.bytes

    async def _verify_blob(self, digest: Digest, phase: Phase) -> int:
        path = blob_path(digest)
        await asyncio.to_thread(check_regular_file, self.source, path)
        if self.in_place:
            hasher = await hash_object(self.source, path, digest.algorithm, phase)
            if hasher.digest() != digest:
                raise ContentMismatch(digest, hasher)
            self._count("blobs verified")
            return hasher.size
        size = await copy_verified(self.source, path, self.target, path, digest, phase)
        self._count("blobs verified")
        self._count("blobs copied")
        return size

    async def _plan(self, repo: Repository, missing: set[Digest]) -> _Plan:
        content = await asyncio.to_thread(self.inventory.repository_content, repo.name)
        plan = _Plan(repo, content)
        for digest in repo.layers:
            if digest in missing:
                self.console.problem(f"{repo.name}: links blob {digest}, which the tree does not hold; not imported")
        revisions = set(repo.revisions)
        for tag, digest in sorted(repo.tags.items()):
            ours = content.tags.get(tag)
            if ours == str(digest):
                continue
            if ours is not None:  # moved by a push here since an earlier import: the newer truth, never rolled back
                self.console.say(f"{repo.name}:{tag} left at {ours} (the tree points it to {digest})")
                self._count("tags kept")
                continue
            if digest not in revisions:
                self.console.problem(f"{repo.name}:{tag} points to {digest}, which the repository has no revision of")
                continue
            plan.tags.setdefault(digest, []).append(tag)
        plan.manifests = [d for d in repo.revisions if str(d) not in content.manifests or d in plan.tags]
        return plan

    async def _read_manifests(self, plans: list[_Plan]) -> tuple[dict[Digest, Manifest], int]:
        """Every manifest some repository needs, read once, checked against its digest and parsed."""
        wanted = sorted({d for plan in plans for d in plan.manifests}, key=str)
        parsed: dict[Digest, Manifest] = {}
        with self.console.phase("manifests", len(wanted)) as phase:

            async def read(digest: Digest) -> None:
                manifest = await self._read_manifest(digest, phase)
                if manifest is not None:
                    parsed[digest] = manifest
                phase.advance()

            await in_parallel(wanted, read, self.jobs)
            return parsed, phase.bytes

    async def _read_manifest(self, digest: Digest, phase: Phase) -> Manifest | None:
        path = blob_path(digest)
        try:
            await asyncio.to_thread(check_regular_file, self.source, path)
            size = await self.source.get_size(path)
            if size > self.max_manifest_bytes:
                self.console.problem(
                    f"manifest {digest}: {size} bytes, over validation.manifests.maxbytes; not imported"
                )
                return None
            raw = await self.source.get_content(path)
        except exceptions.FileNotFoundError:
            self.console.problem(f"manifest {digest}: its blob is missing from the tree; not imported")
            return None
        except (OSError, exceptions.UnspecifiedError) as e:
            self.console.problem(f"manifest {digest} could not be read: {e}; not imported")
            return None
        phase.add_bytes(len(raw))
        actual = digest_of(raw, digest.algorithm)
        if actual != digest:
            self.console.problem(f"manifest {digest}: its bytes hash to {actual}; not imported")
            return None
        try:
            return parse_manifest(raw, "", digest.algorithm)
        except RegistryError as e:
            self.console.problem(f"manifest {digest}: {e.message}; not imported")
            return None

    # --- writing the store ----------------------------------------------------------------------------------------
    def _writes(self, plan: _Plan, manifests: dict[Digest, Manifest]) -> list[_Write]:
        """The store writes one repository needs: its blob links first, then its manifests, children first."""
        repo = plan.repository
        writes = [
            _Write(
                partial(
                    self.store.link_blob,
                    repo.name,
                    digest,
                    self.sizes[digest],
                    recorded=digest in self.recorded,
                ),
                partial(self._linked, repo.name, digest),
            )
            for digest in repo.layers
            if digest in self.sizes and str(digest) not in plan.content.blobs
        ]
        for digest in _children_first(plan.manifests, manifests):
            tags = plan.tags.get(digest, [])
            put = partial(self.store.import_manifest, repo.name, manifests[digest], tags)
            writes.append(_Write(put, partial(self._stored, plan, digest, tags)))
        for digest, tags in plan.tags.items():
            if digest not in manifests:
                for tag in tags:
                    self.console.problem(f"{repo.name}:{tag}: its manifest {digest} was not imported")
        return writes

    def _linked(self, name: str, digest: Digest, linked: bool | None, error: BaseException | None) -> None:
        if error is not None:
            raise error  # a link has no check that could refuse it with an error: the database itself failed
        if linked:
            self._count("links imported")
        else:
            self.console.problem(f"{name}: blob {digest}: {_BEING_DELETED}")

    def _stored(
        self, plan: _Plan, digest: Digest, tags: list[str], kept: list[str] | None, error: BaseException | None
    ) -> None:
        name = plan.repository.name
        if isinstance(error, BadReference):
            self.console.problem(f"{name}@{digest}: {_bad_reference(error)}; not imported")
            for tag in tags:
                self.console.problem(f"{name}:{tag}: its manifest {digest} was not imported")
            return
        if error is not None:
            raise error
        if str(digest) not in plan.content.manifests:
            self._count("manifests imported")
        kept = kept or []
        for tag in kept:  # pushed here since the tags were read: the newer truth, never rolled back
            self.console.say(f"{name}:{tag} left as pushed here meanwhile (the tree points it to {digest})")
        self._count("tags kept", len(kept))
        self._count("tags imported", len(tags) - len(kept))

    async def _commit(self, writes: list[_Write]) -> None:
        """Run the writes in batches, each one transaction (one commit, one fsync, for up to BATCH rows of any
        repositories); a write the store refuses rolls back alone (see `StoreBase.run_batch`)."""
        with self.console.phase("writes", len(writes)) as phase:
            for start in range(0, len(writes), BATCH):
                batch = writes[start : start + BATCH]
                outcomes = await asyncio.to_thread(self.store.run_batch, [w.run for w in batch], True)
                for write, (result, error) in zip(batch, outcomes, strict=True):
                    write.done(result, error)
                phase.advance(len(batch))


@dataclass(frozen=True, slots=True)
class _Write:
    run: Callable[[], Any]
    done: Callable[[Any, BaseException | None], None]
    """Told the write's result and its refusal (None when it was done), once its batch committed."""


def _bad_reference(error: BadReference) -> str:
    what = "blob" if error.kind == "blob" else "child manifest"
    if error.stored_size is None:
        return f"references {what} {error.digest}, which the repository does not have"
    return f"gives {what} {error.digest} size {error.declared_size}, but it has {error.stored_size} bytes"


def _children_first(digests: Iterable[Digest], manifests: dict[Digest, Manifest]) -> list[Digest]:
    """The manifests that were read, images before the indexes over them (an index's children must be stored
    first), each once."""
    pending = [d for d in dict.fromkeys(digests) if d in manifests]
    placed: set[Digest] = set()
    order: list[Digest] = []
    while pending:
        ready = [
            d for d in pending if all(c.digest in placed or c.digest not in pending for c in manifests[d].children)
        ]
        if not ready:  # cannot happen with content-addressed children; store the rest and let the checks speak
            ready = pending
        order += ready
        placed.update(ready)
        pending = [d for d in pending if d not in placed]
    return order
