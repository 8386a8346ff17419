"""`docker-registry import CONFIG --v1 PATH` of a tree the test writes in the original registry's layout (chains,
several repositories, half-pushed images), in place and copied, then served through v1 and pulled through v2 by
skopeo; a second run changes nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pty
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from e2e_tools import require, run
from registry_process import RegistryProcess
from v1_engine import (
    V1TestImage,
    chain,
    expect,
    image,
    payload_checksum,
    pull,
    rootfs,
    unpack,
    write_original_tree,
)


def tree_digest(root: Path) -> str:
    """Paths, modes and contents of a tree: proof that it was not modified."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + oct(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def database_dump(server: RegistryProcess) -> list[str]:
    with sqlite3.connect(server.data_dir / "registry.db") as connection:
        return [line for line in connection.iterdump() if "alembic_version" not in line]


def run_import(server: RegistryProcess, source: Path, timeout: float = 300) -> str:
    config = server.workdir / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(server.config()))
    done = subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "import", str(config), "--v1", str(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def completeness(server: RegistryProcess) -> dict[str, bool]:
    """Each imported image's id: whether it is complete (served)."""
    with sqlite3.connect(server.data_dir / "registry.db") as connection:
        return {row[0]: bool(row[1]) for row in connection.execute("SELECT id, complete FROM v1_images")}


def blob_file(server: RegistryProcess, layer: bytes) -> Path:
    hexdigest = hashlib.sha256(layer).hexdigest()
    return server.data_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"


class Tree:
    """Two repositories over a shared base, a second tag, and two half-pushed images."""

    def __init__(self) -> None:
        self.base, self.middle, self.app = chain(
            {"etc/os-release": b"NAME=legacy\n", "etc/old": b"to be deleted"},
            {"usr/lib/libx.so": os.urandom(20000)},
            {"srv/app": b"application"},
        )
        self.tool = image({"usr/bin/tool": b"tool"}, self.middle, deleted=("etc/old",), compression="xz")
        self.pushing = image({"half": b"in progress"}, self.app)
        self.no_layer = image({"lost": b"layer"}, self.base)
        self.child_of_half = image({"orphan": b"x"}, self.pushing)
        self.images = [self.base, self.middle, self.app, self.tool, self.pushing, self.no_layer, self.child_of_half]
        self.tags: dict[str, dict[str, V1TestImage]] = {
            "legacy/app": {"latest": self.app, "1.0": self.middle},
            "legacy/tool": {"latest": self.tool, "broken": self.pushing},
            "library/base": {"latest": self.base},
        }

    def write(self, root: Path) -> None:
        write_original_tree(root, self.images, self.tags, in_progress=(self.pushing,), without_layer=(self.no_layer,))


@pytest.mark.parametrize("mode", ["in-place", "copied"])
def test_import_serves_v1_and_v2(tmp_path: Path, mode: str) -> None:
    require("skopeo")
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = server.data_dir / "legacy" if mode == "in-place" else tmp_path / "legacy"
    tree = Tree()
    tree.write(source)
    before = tree_digest(source)

    report = run_import(server, source)
    assert ("in place (layers hard-linked)" if mode == "in-place" else "copied") in report
    assert "images: 7 imported, 0 already present, 3 half-pushed" in report
    assert f"half-pushed image {tree.pushing.id}: push in progress" in report
    assert f"half-pushed image {tree.no_layer.id}: no layer" in report
    assert f"half-pushed image {tree.child_of_half.id}: parent {tree.pushing.id} is half-pushed" in report
    assert "tags: 4 imported, 0 present" in report
    assert "tag legacy/tool:broken skipped: Image is being uploaded" in report
    assert tree_digest(source) == before  # PATH is never modified
    # the layer of the push in progress is not verified: it never becomes a blob (its child's, verified, does)
    if mode == "in-place":
        assert "layers: 5 linked in place, 0 copied" in report
        layer = source / "images" / tree.app.id / "layer"
        blob = server.data_dir / "blobs" / "sha256" / hashlib.sha256(tree.app.layer).hexdigest()[:2]
        blob = blob / hashlib.sha256(tree.app.layer).hexdigest() / "data"
        assert blob.stat().st_ino == layer.stat().st_ino  # the same bytes, not a copy
    else:
        assert "layers: 0 linked in place, 5 copied" in report

    dump = database_dump(server)
    again = run_import(server, source)
    assert "images: 0 imported, 4 already present, 3 half-pushed" in again
    assert "tags: 0 imported, 4 present" in again
    assert database_dump(server) == dump  # a second run changes nothing

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            pulled = pull(client, "legacy/app", "latest")
            assert [layer for _, layer in pulled] == [tree.app.layer, tree.middle.layer, tree.base.layer]
            assert expect(client.get("/v1/repositories/legacy/app/tags"), 200).json() == {
                "1.0": tree.middle.id,
                "latest": tree.app.id,
            }
            described = expect(client.get("/v1/repositories/legacy/app/tags/latest/json"), 200).json()
            assert described["last_update"] == 1433160000
            expect(client.get(f"/v1/images/{tree.pushing.id}/json"), 400)
            expect(client.get(f"/v1/images/{tree.no_layer.id}/layer"), 400)
            assert expect(client.get("/v1/repositories/legacy/tool/tags"), 200).json() == {"latest": tree.tool.id}
            assert expect(client.get("/v1/repositories/library/base/images"), 200).json() == [{"id": tree.base.id}]

            for repository, top, images in (
                ("legacy/app", "latest", [tree.base, tree.middle, tree.app]),
                ("legacy/tool", "latest", [tree.base, tree.middle, tree.tool]),
            ):
                target = tmp_path / f"{mode}-{repository.replace('/', '-')}"
                run(
                    [
                        "skopeo",
                        "--insecure-policy",
                        "copy",
                        "--src-tls-verify=false",
                        f"docker://{server.host}/{repository}:{top}",
                        f"dir:{target}",
                    ]
                )
                manifest = json.loads((target / "manifest.json").read_bytes())
                layers = [(target / d["digest"].removeprefix("sha256:")).read_bytes() for d in manifest["layers"]]
                assert layers == [i.layer for i in images]
                assert unpack(layers) == rootfs(images)
    finally:
        server.stop()


def test_progress_on_a_terminal_and_refusals(tmp_path: Path) -> None:
    """On a terminal the import shows a tqdm bar (on stderr); a PATH that is no directory exits 1, a bad
    configuration 2."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = tmp_path / "legacy"
    Tree().write(source)
    config = server.workdir / "config.yml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump(server.config()))
    command = [sys.executable, "-m", "docker_registry.server", "import", str(config), "--v1"]
    primary, secondary = pty.openpty()
    shown = bytearray()

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once the import is gone and everything was read
            while chunk := os.read(primary, 65536):
                shown.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        done = subprocess.run(
            [*command, str(source)], stdout=subprocess.PIPE, stderr=secondary, timeout=300, check=False
        )
    finally:
        os.close(secondary)
        reader.join(timeout=30)
        os.close(primary)
    assert done.returncode == 0
    assert b"10/10" in shown  # 7 images and 3 repositories
    assert b"images: 7 imported" in done.stdout
    missing = subprocess.run([*command, str(tmp_path / "nothing")], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "is not a directory" in missing.stderr
    config.write_text("storage: {filesystem: {rootdirectory: 5}}\nbogus: [")
    broken = subprocess.run([*command, str(source)], capture_output=True, text=True, check=False)
    assert broken.returncode == 2
    assert "configuration error" in broken.stderr


def test_in_place_import_links_the_file_a_symlink_names(tmp_path: Path) -> None:
    """A tree that deduplicates layers by relative symlinks (`images/<a>/layer -> ../<b>/layer`) gets the file the
    symlink names as its blob, hard-linked (the symlink itself was linked: a dangling blob, GET 404); a symlink to
    the registry's own database, with a tarsum for a checksum, is refused and never a blob (probe)."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = server.data_dir / "legacy"
    first = image({"etc/shared": b"one layer, two images"})
    second = dataclasses.replace(image({}), layer=first.layer)
    linked, target = sorted((first, second), key=lambda i: i.id)  # the symlink imported first
    hostile = image({"x": b"x"})
    write_original_tree(source, [linked, target, hostile], {"legacy/dedup": {"linked": linked, "target": target}})
    (source / "images" / linked.id / "layer").unlink()
    (source / "images" / linked.id / "layer").symlink_to(f"../{target.id}/layer")
    (source / "images" / hostile.id / "layer").unlink()
    (source / "images" / hostile.id / "layer").symlink_to(server.data_dir / "registry.db")
    (source / "images" / hostile.id / "_checksum").write_text('["tarsum+sha256:0"]')

    report = run_import(server, source)
    blob = blob_file(server, first.layer)
    assert not blob.is_symlink()
    assert blob.stat().st_ino == (source / "images" / target.id / "layer").stat().st_ino
    assert blob.read_bytes() == first.layer
    assert not [path for path in (server.data_dir / "blobs").rglob("*") if path.is_symlink()]
    assert completeness(server) == {linked.id: True, target.id: True, hostile.id: False}
    assert f"half-pushed image {hostile.id}: images/{hostile.id}/layer leads outside PATH" in report
    assert "tags: 2 imported" in report


def test_an_import_in_the_storage_root_takes_layers_from_its_images_folder_only(tmp_path: Path) -> None:
    """With the original's tree in the storage root itself (PATH is the root: in place), a layer symlink to the
    registry's own files (`../../registry.db`, a blob) stays inside PATH: it was hashed and hard-linked as a blob
    before its checksum was looked at (review). Layers are read from `images/` only, and only a layer its
    `_checksum` verifies becomes a blob."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    server.start()
    server.stop()  # the registry's database in place, as an operator's would be
    source = server.data_dir
    good, database, unverified = image({"ok": b"good layer"}), image({"d": b"d"}), image({"u": b"u"})
    write_original_tree(source, [good, database, unverified], {"legacy/ok": {"latest": good}})
    (source / "images" / database.id / "layer").unlink()
    (source / "images" / database.id / "layer").symlink_to("../../registry.db")
    (source / "images" / unverified.id / "_checksum").write_text('["sha256:' + "0" * 64 + '"]')
    report = run_import(server, source)
    assert f"half-pushed image {database.id}: images/{database.id}/layer leads outside PATH/images" in report
    assert f"half-pushed image {unverified.id}: layer does not match its _checksum" in report
    assert "layers: 1 linked in place, 0 copied" in report
    database_inode = (source / "registry.db").stat().st_ino
    blobs = list((source / "blobs").rglob("data"))
    assert good.layer in [path.read_bytes() for path in blobs]
    assert unverified.layer not in [path.read_bytes() for path in blobs]
    assert all(path.stat().st_ino != database_inode for path in blobs)


def test_import_refuses_what_leads_outside_the_tree(tmp_path: Path) -> None:
    """A layer, a tag's json, an image's directory or a repository's directory that is a symlink out of PATH is
    refused and reported: none of what they name is imported or served (probe)."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source, outside = tmp_path / "legacy", tmp_path / "outside"
    good, stolen, elsewhere = image({"ok": b"ok"}), image({"s": b"s"}), image({"e": b"e"})
    write_original_tree(source, [good, stolen], {"legacy/app": {"latest": good}})
    write_original_tree(outside, [elsewhere], {"evil/repo": {"latest": good}})
    secret = b"top secret bytes"
    (outside / "secret.txt").write_bytes(secret)
    (outside / "secret.json").write_text('{"secret": "top secret json"}')
    layer = source / "images" / stolen.id / "layer"
    layer.unlink()
    layer.symlink_to(outside / "secret.txt")
    (source / "images" / stolen.id / "_checksum").write_text(json.dumps([payload_checksum(stolen.json, secret)]))
    described = source / "repositories" / "legacy" / "app" / "taglatest_json"
    described.unlink()
    described.symlink_to(outside / "secret.json")
    (source / "images" / elsewhere.id).symlink_to(outside / "images" / elsewhere.id)
    (source / "repositories" / "evil").symlink_to(outside / "repositories" / "evil")

    report = run_import(server, source)
    assert f"half-pushed image {stolen.id}: images/{stolen.id}/layer leads outside PATH" in report
    assert f"half-pushed image {elsewhere.id}: images/{elsewhere.id}/json leads outside PATH" in report
    assert "tag legacy/app:latest skipped: repositories/legacy/app/taglatest_json leads outside PATH" in report
    assert "tag evil/repo:* skipped: repositories/evil/repo leads outside PATH" in report
    assert "repositories: 1; tags: 0 imported" in report
    assert completeness(server) == {good.id: True, stolen.id: False}
    assert not blob_file(server, secret).exists()
    assert "top secret" not in "\n".join(database_dump(server))


def test_import_takes_only_a_verified_layer(tmp_path: Path) -> None:
    """An image is complete only when `_checksum` holds a sha256 payload checksum its layer matches, as a checksum
    PUT requires: an empty list, an object, or a tarsum alone (here over a truncated layer) leave it incomplete and
    reported (each was taken as complete). The oldest trees' plain-string checksum is still read (probe)."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = tmp_path / "legacy"
    empty, mapping, truncated, plain = (image({name: name.encode() * 100}) for name in ("a", "b", "c", "d"))
    write_original_tree(source, [empty, mapping, truncated, plain], {"legacy/app": {"latest": truncated}})
    (source / "images" / empty.id / "_checksum").write_text("[]")
    (source / "images" / mapping.id / "_checksum").write_text(json.dumps({"sha256": plain.checksum}))
    (source / "images" / truncated.id / "_checksum").write_text(json.dumps(["tarsum+sha256:" + "0" * 64]))
    (source / "images" / truncated.id / "layer").write_bytes(truncated.layer[:-10])
    (source / "images" / plain.id / "_checksum").write_text(plain.checksum)

    report = run_import(server, source)
    for each in (empty, mapping, truncated):
        assert f"half-pushed image {each.id}: _checksum holds no sha256 payload checksum" in report
    assert "tag legacy/app:latest skipped: Image is being uploaded" in report
    assert completeness(server) == {empty.id: False, mapping.id: False, truncated.id: False, plain.id: True}


def test_import_refuses_json_that_is_not_strict(tmp_path: Path) -> None:
    """Image json or a tag's json with NaN, a number beyond a double, a lone surrogate escape or nesting deeper than
    the reader's stack is reported and skipped, and the import goes on (such json was imported and served back as
    invalid JSON; the deep nesting ended the import with a RecursionError, in a repository's tags halfway; probe)."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = tmp_path / "legacy"
    good = image({"ok": b"ok"})
    deep = "[" * 100_000 + "]" * 100_000
    oddities = {"nan": "NaN", "huge": "1e400", "surrogate": '"\\ud800"', "deep": deep}
    odd = {name: image({name: b"x"}) for name in oddities}
    write_original_tree(source, [good, *odd.values()], {"legacy/app": {"a-deep": good, "latest": good}})
    for name, value in oddities.items():
        each = odd[name]
        document = each.json.decode()[:-1] + f', "odd": {value}}}'
        (source / "images" / each.id / "json").write_text(document)
    deep_checksum = image({"c": b"c"})
    write_original_tree(source, [deep_checksum], {})
    (source / "images" / deep_checksum.id / "_checksum").write_text(deep)
    (source / "repositories" / "legacy" / "app" / "taga-deep_json").write_text(f'{{"x": {deep}}}')

    report = run_import(server, source)
    for name, each in odd.items():
        assert f"half-pushed image {each.id}: json is not valid JSON" in report, name
    assert f"half-pushed image {deep_checksum.id}: _checksum is not valid JSON: JSON nested too deeply" in report
    assert "tag legacy/app:a-deep skipped: its json is not valid JSON" in report
    assert "tags: 1 imported" in report
    assert completeness(server) == {good.id: True}


def test_import_refuses_what_is_no_regular_file_or_too_large(tmp_path: Path) -> None:
    """A FIFO as an image's json, layer or a tag blocked the import forever; a json over the 4 MiB an image json
    PUT takes was read whole. Each is reported and skipped (probe)."""
    server = RegistryProcess(tmp_path / "registry", workers=1)
    source = tmp_path / "legacy"
    good, fifo_json, fifo_layer, large = (image({name: b"x"}) for name in ("a", "b", "c", "d"))
    write_original_tree(source, [good, fifo_json, fifo_layer, large], {"legacy/app": {"fifo": good, "latest": good}})
    for path in (
        source / "images" / fifo_json.id / "json",
        source / "images" / fifo_layer.id / "layer",
        source / "repositories" / "legacy" / "app" / "tag_fifo",
    ):
        path.unlink()
        os.mkfifo(path)
    (source / "images" / large.id / "json").write_bytes(large.json[:-1] + b" " * (4 * 1024 * 1024) + b"}")

    report = run_import(server, source, timeout=60)
    assert f"half-pushed image {fifo_json.id}: images/{fifo_json.id}/json is not a regular file" in report
    assert f"half-pushed image {fifo_layer.id}: images/{fifo_layer.id}/layer is not a regular file" in report
    assert f"half-pushed image {large.id}: images/{large.id}/json is larger than 4194304 bytes" in report
    assert "tag legacy/app:fifo skipped: repositories/legacy/app/tag_fifo is not a regular file" in report
    assert "tags: 1 imported" in report
    assert completeness(server) == {good.id: True, fifo_layer.id: False}
