"""Reading a CNCF Distribution storage tree (what `registry:2` writes below its `rootdirectory`), through a storage
driver rooted at its `docker/registry/v2` folder:

    blobs/<alg>/<first two>/<encoded>/data                      every blob, manifests included
    repositories/<name>/_layers/<alg>/<encoded>/link            blobs (config, layers) the repository serves
    repositories/<name>/_manifests/revisions/<alg>/<encoded>/link   manifests of the repository
    repositories/<name>/_manifests/tags/<tag>/current/link      what each tag points to
    repositories/<name>/_uploads/...                            uploads in progress (not imported)

Names nest (`team/app` is `repositories/team/app/`), and a repository may sit inside another's folder
(`team` and `team/app`). A link file holds a digest as text. Blobs here are laid out exactly as this registry
lays out its own (`docker_registry.core.digest.blob_path`), relative to that `v2` folder.

Distribution writes no symbolic links: a folder reached through one (a loop back up the tree, a repository that
lives elsewhere) is reported and not followed, and a blob's data must be a regular file.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, DigestError, parse_digest
from docker_registry.core.driver import Base

from ..registry.errors import RegistryError
from ..registry.names import check_tag

V2 = os.path.join("docker", "registry", "v2")
REPOSITORIES = "repositories"
_MARKERS = frozenset({"_layers", "_manifests", "_uploads"})
"""Folders that make the folder holding them a repository."""
_LINK_MAX = 1024
LINK_READS = 16
"""Link files read at once."""
"""A link holds one digest; anything longer is not a link Distribution wrote."""


class NotADistributionTree(ValueError):
    """The path given is not a Distribution storage tree (a usage error: nothing was done)."""


class NotARegularFile(OSError):
    """A blob's data is a device, a pipe or a folder: reading /dev/zero, say, never ends (and a copy fills the
    disk)."""


def tree_root(path: str) -> str:
    """The `docker/registry/v2` folder of a Distribution tree: `path` is Distribution's `rootdirectory`, or that
    folder itself."""
    for candidate in (os.path.join(path, V2), path):
        if os.path.isdir(os.path.join(candidate, "blobs")) or os.path.isdir(os.path.join(candidate, REPOSITORIES)):
            return os.path.abspath(candidate)
    raise NotADistributionTree(
        f"{path} is not a CNCF Distribution storage tree: neither it nor {os.path.join(path, V2)} has blobs/ or "
        "repositories/ (give the rootdirectory of Distribution's filesystem storage)"
    )


@dataclass
class Repository:
    name: str
    layers: list[Digest] = field(default_factory=list)
    revisions: list[Digest] = field(default_factory=list)
    tags: dict[str, Digest] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Link files that could not be read as a digest naming their own folder: reported, not imported."""


@dataclass(frozen=True)
class _Walk:
    source: Base
    report: Callable[[str], None]
    """Told what could not be read or was not followed (a folder, not one repository's link)."""
    real_root: str | None
    """The tree's folder, symbolic links resolved (the tree may sit behind one); None for a source that is not a
    local disk."""


async def repositories(source: Base, report: Callable[[str], None]) -> AsyncIterator[Repository]:
    """Every repository of the tree with its links, one at a time (a repository's links are few; the tree's may
    be millions). A repository's link files are read several at once: each read is a round trip to storage.
    Folders that cannot be listed or lead through a symbolic link are told to `report` and skipped."""
    walk = _Walk(source, report, await asyncio.to_thread(_real_root, source))
    async for name in _repository_names(walk, REPOSITORIES):
        repo = Repository(name)
        base = f"{REPOSITORIES}/{name}"
        tag_dirs = [d for d in await _children(walk, f"{base}/_manifests/tags") if _is_tag(d, repo)]
        repo.layers, repo.revisions, tags = await asyncio.gather(
            _digest_links(walk, f"{base}/_layers", repo),
            _digest_links(walk, f"{base}/_manifests/revisions", repo),
            _read_links(source, [f"{tag_dir}/current/link" for tag_dir in tag_dirs], repo),
        )
        repo.tags = {
            tag_dir.rsplit("/", 1)[1]: digest for tag_dir, digest in zip(tag_dirs, tags, strict=True) if digest
        }
        yield repo


def _real_root(source: Base) -> str | None:
    local = source.local_path(REPOSITORIES)
    return None if local is None else os.path.realpath(os.path.dirname(local))


def _is_tag(tag_dir: str, repo: Repository) -> bool:
    """Whether a tag folder is named as the API names tags: another name (`bad tag`, `.hidden`, longer than the
    128 characters a tag may have) could never be pulled, and is reported instead."""
    tag = tag_dir.rsplit("/", 1)[1]
    try:
        check_tag(tag)
    except RegistryError:
        shown = repr(tag[:128]) + ("..." if len(tag) > 128 else "")
        repo.problems.append(f"tag {shown} is not a valid tag name; not imported")
        return False
    return True


def check_regular_file(source: Base, path: str) -> None:
    """Raise NotARegularFile unless `path` of a local source is a regular file, symbolic links resolved: a link
    to /dev/zero or a pipe would be read for ever. A missing file is left to the read, which reports it."""
    local = source.local_path(path)
    if local is None:
        return
    try:
        mode = os.lstat(os.path.realpath(local)).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{path} is not a regular file")


async def _repository_names(walk: _Walk, folder: str) -> AsyncIterator[str]:
    children = await _children(walk, folder)
    names = {child.rsplit("/", 1)[1] for child in children}
    if folder != REPOSITORIES and names & _MARKERS:
        yield folder.removeprefix(REPOSITORIES + "/")
    for child in children:
        if not child.rsplit("/", 1)[1].startswith("_"):
            async for name in _repository_names(walk, child):
                yield name


async def _children(walk: _Walk, folder: str) -> list[str]:
    try:
        real = await asyncio.to_thread(_elsewhere, walk, folder)
        if real is not None:
            walk.report(f"{folder} leads through a symbolic link (to {real}); not followed")
            return []
        return await walk.source.list_directory(folder)
    except exceptions.FileNotFoundError:
        return []
    except (OSError, exceptions.UnspecifiedError) as e:  # a loop of links, no permission, a name not a path
        walk.report(f"{folder} could not be listed: {e}; skipped")
        return []


def _elsewhere(walk: _Walk, folder: str) -> str | None:
    """Where `folder` really is when a symbolic link on its way leads there, else None."""
    local = walk.source.local_path(folder)
    if walk.real_root is None or local is None:
        return None
    real = os.path.realpath(local)
    return None if real == os.path.join(walk.real_root, *folder.split("/")) else real


async def _digest_links(walk: _Walk, folder: str, repo: Repository) -> list[Digest]:
    """The digests linked below `folder` as `<alg>/<encoded>/link`, each checked against its folder's name."""
    digest_dirs = [
        digest_dir
        for algorithm_dir in await _children(walk, folder)
        for digest_dir in await _children(walk, algorithm_dir)
    ]
    found = []
    for digest_dir, digest in zip(
        digest_dirs, await _read_links(walk.source, [f"{d}/link" for d in digest_dirs], repo), strict=True
    ):
        algorithm, encoded = digest_dir.rsplit("/", 2)[1:]
        if digest is not None and str(digest) != f"{algorithm}:{encoded}":
            repo.problems.append(f"{digest_dir}/link names {digest}, not the {algorithm}:{encoded} of its folder")
        elif digest is not None:
            found.append(digest)
    return found


async def _read_links(source: Base, paths: list[str], repo: Repository) -> list[Digest | None]:
    """The digests in the link files `paths`, read LINK_READS at a time, in order; None for those unreadable."""
    results: list[Digest | None] = [None] * len(paths)
    for start in range(0, len(paths), LINK_READS):
        chunk = paths[start : start + LINK_READS]
        results[start : start + len(chunk)] = await asyncio.gather(*(_read_link(source, p, repo) for p in chunk))
    return results


async def _read_link(source: Base, path: str, repo: Repository) -> Digest | None:
    try:
        if await source.get_size(path) > _LINK_MAX:
            repo.problems.append(f"{path} is too large to be a link")
            return None
        text = (await source.get_content(path)).decode("ascii").strip()
        return parse_digest(text)
    except exceptions.FileNotFoundError:
        repo.problems.append(f"{path} is missing (a half-written link?)")
    except (UnicodeDecodeError, DigestError) as e:
        repo.problems.append(f"{path} does not hold a digest: {e}")
    except (OSError, exceptions.UnspecifiedError) as e:
        repo.problems.append(f"{path} could not be read: {e}")
    return None
