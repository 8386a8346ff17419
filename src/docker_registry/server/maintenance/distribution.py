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
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, DigestError, parse_digest
from docker_registry.core.driver import Base

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


async def repositories(source: Base) -> AsyncIterator[Repository]:
    """Every repository of the tree with its links, one at a time (a repository's links are few; the tree's may
    be millions). A repository's link files are read several at once: each read is a round trip to storage."""
    async for name in _repository_names(source, REPOSITORIES):
        repo = Repository(name)
        base = f"{REPOSITORIES}/{name}"
        tag_dirs = await _children(source, f"{base}/_manifests/tags")
        repo.layers, repo.revisions, tags = await asyncio.gather(
            _digest_links(source, f"{base}/_layers", repo),
            _digest_links(source, f"{base}/_manifests/revisions", repo),
            _read_links(source, [f"{tag_dir}/current/link" for tag_dir in tag_dirs], repo),
        )
        repo.tags = {
            tag_dir.rsplit("/", 1)[1]: digest for tag_dir, digest in zip(tag_dirs, tags, strict=True) if digest
        }
        yield repo


async def _repository_names(source: Base, folder: str) -> AsyncIterator[str]:
    children = await _children(source, folder)
    names = {child.rsplit("/", 1)[1] for child in children}
    if folder != REPOSITORIES and names & _MARKERS:
        yield folder.removeprefix(REPOSITORIES + "/")
    for child in children:
        if not child.rsplit("/", 1)[1].startswith("_"):
            async for name in _repository_names(source, child):
                yield name


async def _children(source: Base, folder: str) -> list[str]:
    try:
        return await source.list_directory(folder)
    except exceptions.FileNotFoundError:
        return []


async def _digest_links(source: Base, folder: str, repo: Repository) -> list[Digest]:
    """The digests linked below `folder` as `<alg>/<encoded>/link`, each checked against its folder's name."""
    digest_dirs = [
        digest_dir
        for algorithm_dir in await _children(source, folder)
        for digest_dir in await _children(source, algorithm_dir)
    ]
    found = []
    for digest_dir, digest in zip(
        digest_dirs, await _read_links(source, [f"{d}/link" for d in digest_dirs], repo), strict=True
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
    return None
