"""`import --from distribution` against what happens here while it runs, and against trees no Distribution wrote.

The trees are written by hand, file by file as Distribution lays them out (`maintenance/distribution.py`), and
imported in place into a real store (SQLite, and PostgreSQL where the race is the database's): a garbage collection
deleting a blob the tree links, a tag pushed between the import's reading of the tags and its writing them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.core.digest import Digest
from docker_registry.drivers.file import Driver
from docker_registry.server.maintenance.console import Console
from docker_registry.server.maintenance.distribution import Repository
from docker_registry.server.maintenance.fsck import fsck
from docker_registry.server.maintenance.importer import Importer, ImportResult, _Plan
from docker_registry.server.registry.manifests import parse_manifest
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.inventory import InventoryQueries
from docker_registry.server.store.metadata import MetadataStore

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Pushed:
    manifest: str
    raw: bytes
    config: str
    layer: str


class Tree:
    """A Distribution `docker/registry/v2` folder, written file by file."""

    def __init__(self, v2: Path) -> None:
        self.v2 = v2

    def blob(self, data: bytes) -> str:
        encoded = hashlib.sha256(data).hexdigest()
        path = self.blob_file(f"sha256:{encoded}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"sha256:{encoded}"

    def blob_file(self, digest: str) -> Path:
        encoded = digest.removeprefix("sha256:")
        return self.v2 / "blobs" / "sha256" / encoded[:2] / encoded / "data"

    def link(self, repository: str, folder: str, digest: str) -> None:
        path = self.v2 / "repositories" / repository / folder / "sha256" / digest.removeprefix("sha256:") / "link"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)

    def tag(self, repository: str, tag: str, digest: str) -> None:
        path = self.v2 / "repositories" / repository / "_manifests" / "tags" / tag / "current" / "link"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)

    def push(self, repository: str, tag: str, seed: str, layer: bytes | None = None) -> Pushed:
        """An OCI image (its config and one layer) linked in `repository` and tagged `tag`."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        layer = layer if layer is not None else f"layer of {seed}".encode()
        config_digest, layer_digest = self.blob(config), self.blob(layer)
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
            }
        ).encode()
        manifest = self.blob(raw)
        for digest in (config_digest, layer_digest):
            self.link(repository, "_layers", digest)
        self.link(repository, "_manifests/revisions", manifest)
        self.tag(repository, tag, manifest)
        return Pushed(manifest, raw, config_digest, layer_digest)


@dataclass
class Stores:
    store: MetadataStore
    inventory: InventoryQueries

    def sql(self, statement: str, **params: object) -> list[Any]:
        with self.store.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def being_deleted(self, digest: str) -> None:
        """What a collection leaves of a blob it is deleting: unlinked everywhere, marked."""
        self.sql("DELETE FROM repository_blobs WHERE digest = :digest", digest=digest)
        self.sql("UPDATE blobs SET deleting_since = :now WHERE digest = :digest", digest=digest, now=time.time())

    def links(self, digest: str) -> list[str]:
        query = (
            "SELECT r.name FROM repository_blobs b JOIN repositories r ON r.id = b.repository_id "
            "WHERE b.digest = :digest ORDER BY r.name"
        )
        return [row[0] for row in self.sql(query, digest=digest)]

    def tag(self, repository: str, tag: str) -> str | None:
        query = (
            "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id "
            "JOIN repositories r ON r.id = t.repository_id WHERE r.name = :repository AND t.name = :tag"
        )
        rows = self.sql(query, repository=repository, tag=tag)
        return str(rows[0][0]) if rows else None


@pytest.fixture
def stores(database_url: str) -> Iterator[Stores]:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    yield Stores(store, InventoryQueries(engine))
    store.close()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "docker" / "registry" / "v2")


async def run_import(tree: Tree, stores: Stores) -> tuple[ImportResult, list[str]]:
    """Import `tree` in place (it is the storage root); the result and the report's lines."""
    out = io.StringIO()
    console = Console("import", out=out, progress=io.StringIO(), interactive=False)
    driver = Driver({"rootdirectory": str(tree.v2)})
    importer = Importer(
        driver, driver, stores.store, stores.inventory, console, in_place=True, jobs=2, max_manifest_bytes=1 << 22
    )
    result = await importer.run()
    return result, out.getvalue().splitlines()


def after_planning(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run `action` once the import planned its first repository, before it writes anything: what a push or a
    collection does while a long import reads manifests."""
    plan = Importer._plan

    async def planned(importer: Importer, repo: Repository, missing: set[Digest]) -> _Plan:
        result = await plan(importer, repo, missing)
        action()
        return result

    monkeypatch.setattr(Importer, "_plan", planned)


# --- a blob garbage collection is deleting -----------------------------------------------------------------------


async def test_a_blob_being_deleted_at_the_scan_is_not_linked(tree: Tree, stores: Stores) -> None:
    """The collection marked the blob and is removing its file (or died doing so): an import that counted it
    present linked it, the collection removed the file, and the blob was HEAD 200, GET 404, its upload refused."""
    shared = b"a layer both repositories use"
    first = tree.push("team/app", "v1", "one", layer=shared)
    await run_import(tree, stores)
    stores.being_deleted(first.layer)
    tree.push("team/other", "v1", "two", layer=shared)

    result, lines = await run_import(tree, stores)

    assert stores.links(first.layer) == []
    assert any(first.layer in line and "garbage collection" in line for line in lines), lines
    assert result.counts["blobs verified"] == 1  # the other image's config only: the doomed layer is not read
    assert stores.tag("team/other", "v1") is None  # its layer cannot be served: reported, not imported


async def test_a_blob_a_collection_begins_deleting_during_the_import_is_not_linked(
    tree: Tree, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Present when the blobs were scanned, marked by a collection before the links are written: the link's own
    transaction must see the mark."""
    shared = b"a layer both repositories use"
    first = tree.push("team/app", "v1", "one", layer=shared)
    await run_import(tree, stores)
    tree.push("team/other", "v1", "two", layer=shared)
    after_planning(monkeypatch, lambda: stores.being_deleted(first.layer))

    _, lines = await run_import(tree, stores)

    assert stores.links(first.layer) == []
    assert any(f"team/other: blob {first.layer}" in line and "garbage collection" in line for line in lines), lines


async def test_fsck_reports_blobs_a_stopped_collection_left_half_deleted(tree: Tree, stores: Stores) -> None:
    image = tree.push("team/app", "v1", "one")
    await run_import(tree, stores)
    stores.being_deleted(image.layer)
    driver = Driver({"rootdirectory": str(tree.v2)})

    for repair in (False, True):
        out = io.StringIO()
        console = Console("fsck", out=out, progress=io.StringIO(), interactive=False)
        result = await fsck(driver, stores.inventory, console, repair, 2)
        assert f"problem: blob {image.layer} is left half-deleted by a garbage collection" in out.getvalue()
        assert result.counts["deletions unfinished"] == 1
        assert result.remaining >= 1
    assert "(left to garbage collection)" in out.getvalue()

    # a live collection holds the lease: it is deleting them now, nothing to report
    stores.sql(
        "INSERT INTO leases (name, holder, expires_at) VALUES ('gc', 'collector', :until)", until=time.time() + 60
    )
    out = io.StringIO()
    result = await fsck(driver, stores.inventory, Console("fsck", out=out, interactive=False), False, 2)
    assert result.counts["deletions unfinished"] == 0
    assert "half-deleted" not in out.getvalue()


# --- tags pushed while the import runs ---------------------------------------------------------------------------


async def test_a_tag_pushed_while_the_import_runs_is_not_rolled_back(
    tree: Tree, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import read the repository's tags (none), then a client pushed `v1` here: the import's tag write must
    leave it, as docs/maintenance.md promises for every tag this registry has."""
    image = tree.push("team/app", "v1", "tree")
    pushed = tree.push("team/app", "other", "pushed here")
    manifest = parse_manifest(pushed.raw, "", "sha256")

    def push() -> None:
        stores.store.link_blob("team/app", manifest.blobs[0].digest, manifest.blobs[0].size)
        stores.store.link_blob("team/app", manifest.blobs[1].digest, manifest.blobs[1].size)
        stores.store.put_manifest("team/app", manifest, ["v1"])

    after_planning(monkeypatch, push)
    result, lines = await run_import(tree, stores)

    assert stores.tag("team/app", "v1") == pushed.manifest
    assert stores.tag("team/app", "other") == pushed.manifest
    assert result.counts["tags kept"] == 1
    assert result.counts["tags imported"] == 1
    assert any("team/app:v1 left" in line and image.manifest in line for line in lines), lines


# --- trees no Distribution wrote -----------------------------------------------------------------------------------


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("problem: ")]


async def test_tags_the_api_could_not_name_are_reported_and_skipped(tree: Tree, stores: Stores) -> None:
    """`bad tag`, `.hidden` and a 200-character name were imported (on PostgreSQL the last one, longer than the
    column, aborted the whole import); no client could pull them."""
    image = tree.push("team/app", "v1", "one")
    bad = ["bad tag", ".hidden", "x" * 200]
    for tag in bad:
        tree.tag("team/app", tag, image.manifest)

    result, lines = await run_import(tree, stores)

    assert stores.sql("SELECT name FROM tags") == [("v1",)]
    assert result.counts["tags imported"] == 1
    for tag in ("'bad tag'", "'.hidden'", "'" + "x" * 128 + "'..."):
        assert any(f"tag {tag} is not a valid tag name" in line for line in problems(lines)), lines


async def test_a_symbolic_link_loop_is_reported_not_followed(tree: Tree, stores: Stores) -> None:
    """`ln -s .. repositories/team/loop`: the walk went round it until the system refused (ELOOP), a traceback,
    importing `team/loop/team/app` and the like on the way."""
    tree.push("team/app", "v1", "one")
    (tree.v2 / "repositories" / "team" / "loop").symlink_to("..")

    result, lines = await run_import(tree, stores)

    assert [row[0] for row in stores.sql("SELECT name FROM repositories")] == ["team/app"]
    assert result.counts["repositories"] == 1
    assert problems(lines) == [
        f"problem: repositories/team/loop leads through a symbolic link (to {tree.v2 / 'repositories'}); not followed"
    ]


async def test_a_repository_folder_linked_from_outside_the_tree_is_not_imported(
    tree: Tree, stores: Stores, tmp_path: Path
) -> None:
    tree.push("team/app", "v1", "one")
    elsewhere = Tree(tmp_path / "elsewhere")
    elsewhere.push("secret", "v1", "two")
    (tree.v2 / "repositories" / "team" / "secret").symlink_to(elsewhere.v2 / "repositories" / "secret")

    _, lines = await run_import(tree, stores)

    assert [row[0] for row in stores.sql("SELECT name FROM repositories")] == ["team/app"]
    assert any("repositories/team/secret leads through a symbolic link" in line for line in problems(lines)), lines


class _Unlistable(Driver):
    """A tree one of whose folders this user may not read (EACCES: root reads any, so it is simulated)."""

    async def _list_directory(self, prefix: str) -> list[str]:
        if prefix == "repositories/locked":
            raise PermissionError(13, "Permission denied", prefix)
        return await super()._list_directory(prefix)


async def test_a_folder_that_cannot_be_listed_is_reported_and_skipped(tree: Tree, stores: Stores) -> None:
    tree.push("team/app", "v1", "one")
    tree.push("locked/app", "v1", "two")
    out = io.StringIO()
    console = Console("import", out=out, progress=io.StringIO(), interactive=False)
    driver = _Unlistable({"rootdirectory": str(tree.v2)})
    importer = Importer(
        driver, driver, stores.store, stores.inventory, console, in_place=True, jobs=2, max_manifest_bytes=1 << 22
    )

    result = await importer.run()

    assert result.counts["repositories"] == 1
    assert [row[0] for row in stores.sql("SELECT name FROM repositories")] == ["team/app"]
    assert "problem: repositories/locked could not be listed: [Errno 13] Permission denied" in out.getvalue()


async def test_a_blob_that_is_a_device_is_refused_not_read_for_ever(tree: Tree, stores: Stores) -> None:
    """A blob's data linked to /dev/zero was read (and, copying, written into the upload area) without end."""
    image = tree.push("team/app", "v1", "one")
    data = tree.blob_file(image.layer)
    data.unlink()
    data.symlink_to("/dev/zero")

    result, lines = await asyncio.wait_for(run_import(tree, stores), 30)

    assert any(f"blob {image.layer}" in line and "is not a regular file" in line for line in problems(lines)), lines
    assert stores.links(image.layer) == []
    assert result.counts["blobs verified"] == 1  # the config
