"""`docker-registry import CONFIG --v1 PATH` of a tree the test writes in the original registry's layout (chains,
several repositories, half-pushed images), in place and copied, then served through v1 and pulled through v2 by
skopeo; a second run changes nothing."""

from __future__ import annotations

import contextlib
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
from v1_engine import V1TestImage, chain, expect, image, pull, rootfs, unpack, write_original_tree


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


def run_import(server: RegistryProcess, source: Path) -> str:
    config = server.workdir / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(server.config()))
    done = subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "import", str(config), "--v1", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


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
    if mode == "in-place":
        assert "layers: 6 linked in place, 0 copied" in report
        layer = source / "images" / tree.app.id / "layer"
        blob = server.data_dir / "blobs" / "sha256" / hashlib.sha256(tree.app.layer).hexdigest()[:2]
        blob = blob / hashlib.sha256(tree.app.layer).hexdigest() / "data"
        assert blob.stat().st_ino == layer.stat().st_ino  # the same bytes, not a copy
    else:
        assert "layers: 0 linked in place, 6 copied" in report

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
