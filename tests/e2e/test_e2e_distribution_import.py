"""Moving in from CNCF Distribution, and checking a store: `docker-registry import --from distribution` on a tree the
real Distribution 2.8 wrote (pushed to with skopeo), then pulled through this registry with skopeo, both in place
and copied; `docker-registry fsck` on blobs altered or removed on disk, and what `--repair` leaves a client."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml
from postgres_cluster import PostgresCluster

from e2e_images import Descriptor, Image, OciLayout, canonical_json
from e2e_tools import require, run
from oci_content import DOCKER_MANIFEST, OCI_MANIFEST
from prerequisites import EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL, require_module
from registry_process import RegistryProcess, free_port
from server_launch import DISTRIBUTION_BINARY

REPO = "team/app"
NESTED = "team/app/tools"
"""A repository whose folder sits inside another repository's: Distribution nests them."""
SBOM_TYPE = "application/vnd.example.sbom"
V2 = Path("docker/registry/v2")


@dataclass
class Pushed:
    """What the test pushed to Distribution: the layout it came from and what each tag must pull back as."""

    tree: Path
    """Distribution's rootdirectory after it stopped."""
    layout: OciLayout
    image: Image
    index: Descriptor
    platforms: list[Image]
    tool: Image
    sbom: Descriptor


def skopeo(*args: str) -> str:
    return run(["skopeo", "--insecure-policy", *args]).stdout


def push(layout: OciLayout, tag: str, destination: str, *options: str) -> None:
    skopeo("copy", *options, "--dest-tls-verify=false", layout.ref(tag), f"docker://{destination}")


def add_sbom(layout: OciLayout, subject: Descriptor, tag: str) -> Descriptor:
    """An OCI artifact with a subject: Distribution 2.8 stores it as an image manifest (it knows no referrers)."""
    empty = layout.write_blob("application/vnd.oci.empty.v1+json", b"{}")
    content = layout.write_blob("application/vnd.example.sbom+json", json.dumps({"sbom": os.urandom(8).hex()}).encode())
    subject_json = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": empty.as_json(),
        "layers": [content.as_json()],
        "subject": subject_json,
    }
    descriptor = layout.write_blob(OCI_MANIFEST, canonical_json(manifest))
    layout._tag(descriptor, tag)
    return descriptor


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """One tree written by the real Distribution for the module; tests work on copies of it."""
    require("skopeo", DISTRIBUTION_BINARY)
    work = tmp_path_factory.mktemp("distribution")
    layout = OciLayout(work / "layout")
    image = layout.add_image("v1")
    index, platforms = layout.add_index("multi")
    tool = layout.add_image("tool", layer_count=1)
    sbom = add_sbom(layout, image.manifest, "sbom")
    server = RegistryProcess(work / "server", kind="distribution").start()
    try:
        push(layout, "v1", f"{server.host}/{REPO}:v1")
        push(layout, "v1", f"{server.host}/{REPO}:stable")  # a second tag on the same image
        push(layout, "multi", f"{server.host}/{REPO}:multi", "--all")
        push(layout, "sbom", f"{server.host}/{REPO}:sbom")
        push(layout, "tool", f"{server.host}/{NESTED}:latest")
        push(layout, "tool", f"{server.host}/{NESTED}:docker", "--format", "v2s2")  # Docker schema 2, same blobs
    finally:
        server.stop()
    return Pushed(server.data_dir, layout, image, index, platforms, tool, sbom)


def tree_copy(pushed: Pushed, dest: Path) -> Path:
    shutil.copytree(pushed.tree, dest, symlinks=True)
    return dest


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file below `root`: its content hash and inode (a file copied or rewritten gets another inode)."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            found[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_ino)
    return found


def write_config(server: RegistryProcess, rootdirectory: Path | None = None) -> Path:
    """The server's configuration as a file the maintenance commands read too (optionally another root)."""
    server.workdir.mkdir(parents=True, exist_ok=True)
    config = server.config()
    if rootdirectory is not None:
        config["storage"]["filesystem"]["rootdirectory"] = str(rootdirectory)
    path = server.workdir / "maintenance.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """A maintenance command as an operator runs it, output not on a terminal (plain lines, no bar)."""
    return subprocess.run(
        [sys.executable, "-m", "docker_registry.server", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    line = next(line for line in result.stdout.splitlines() if " summary: " in line)
    parts = [part.split(" ", 1) for part in line.split(" summary: ", 1)[1].split(", ")]
    return {part[1]: part[0] for part in parts if len(part) == 2}


def pull_and_compare(server: RegistryProcess, pushed: Pushed, dest: Path) -> None:
    """Pull every tag with skopeo and compare every byte with what was pushed to Distribution."""
    back = OciLayout(dest)
    expected = {
        f"{REPO}:v1": [pushed.image],
        f"{REPO}:stable": [pushed.image],
        f"{REPO}:multi": pushed.platforms,
        f"{NESTED}:latest": [pushed.tool],
    }
    for n, (ref, images) in enumerate(expected.items()):
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{server.host}/{ref}", back.ref(f"t{n}"))
        for image in images:
            for blob in (image.manifest, image.config, *image.layers):
                assert back.read_blob(blob.digest) == pushed.layout.read_blob(blob.digest), (ref, blob)
    assert back.read_blob(pushed.index.digest) == pushed.layout.read_blob(pushed.index.digest)

    # the Docker schema 2 manifest: served with its own type and the very bytes Distribution stored
    docker = dest.parent / f"{dest.name}-docker"
    skopeo("copy", "--src-tls-verify=false", f"docker://{server.host}/{NESTED}:docker", f"dir:{docker}")
    manifest = (docker / "manifest.json").read_bytes()
    assert json.loads(manifest)["mediaType"] == DOCKER_MANIFEST
    link = pushed.tree / V2 / "repositories" / NESTED / "_manifests" / "tags" / "docker" / "current" / "link"
    assert manifest == blob_file(pushed.tree / V2, link.read_text()).read_bytes()
    for blob in (pushed.tool.config, *pushed.tool.layers):
        assert (docker / blob.digest.removeprefix("sha256:")).read_bytes() == pushed.layout.read_blob(blob.digest)


def assert_referrers(client: httpx.Client, pushed: Pushed) -> None:
    """The artifact's subject was indexed at import: the referrers API (which Distribution 2.8 lacks) lists it."""
    response = client.get(f"/v2/{REPO}/referrers/{pushed.image.manifest.digest}")
    assert response.status_code == 200
    assert [(m["digest"], m.get("artifactType")) for m in response.json()["manifests"]] == [
        (pushed.sbom.digest, SBOM_TYPE)
    ]


def database_dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_import_copied_then_pulled_and_twice_changes_nothing(pushed: Pushed, tmp_path: Path) -> None:
    tree = tree_copy(pushed, tmp_path / "distribution")
    before = snapshot(tree)
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server)

    first = command("import", str(config), "--from", "distribution", str(tree))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "\r" not in first.stderr, "no terminal: plain progress lines, no bar"
    assert "docker-registry import: blobs: " in first.stderr
    counts = summary(first)
    assert counts["repositories"] == "2"
    assert counts["problems"] == "0"
    assert int(counts["blobs copied"]) == int(counts["blobs verified"]) > 0
    assert counts["manifests imported"] == "7"  # image, index and its 2 platforms, sbom, tool in OCI and Docker
    assert counts["tags imported"] == "6"
    assert snapshot(tree) == before, "the Distribution tree must be left exactly as it was"

    dump = database_dump(server.data_dir / "registry.db")
    again = command("import", str(config), "--from", "distribution", str(tree))
    assert again.returncode == 0, again.stdout + again.stderr
    counts = summary(again)
    assert (counts["blobs verified"], counts["links imported"], counts["manifests imported"]) == ("0", "0", "0")
    assert counts["tags imported"] == "0"
    assert database_dump(server.data_dir / "registry.db") == dump, "a second import must change nothing"

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/v2/_catalog").json()["repositories"] == [REPO, NESTED]
            assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["multi", "sbom", "stable", "v1"]
            assert_referrers(client, pushed)
            pull_and_compare(server, pushed, tmp_path / "back")

            # a push here moves a tag; importing the tree again must not roll it back
            push(pushed.layout, "tool", f"{server.host}/{REPO}:v1")
            later = command("import", str(config), "--from", "distribution", str(tree))
            assert later.returncode == 0, later.stdout + later.stderr
            assert f"{REPO}:v1 left at {pushed.tool.manifest.digest} (the tree points it to" in later.stdout
            assert summary(later)["tags kept"] == "1"
            response = client.head(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert response.headers["Docker-Content-Digest"] == pushed.tool.manifest.digest
    finally:
        server.stop()
    assert snapshot(tree) == before


def test_import_in_place_copies_nothing_and_pulls(pushed: Pushed, tmp_path: Path) -> None:
    tree = tree_copy(pushed, tmp_path / "distribution")
    before = snapshot(tree)
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server, rootdirectory=tree / V2)

    result = command("import", str(config), "--from", "distribution", str(tree))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in place" in result.stderr
    counts = summary(result)
    assert "blobs copied" not in counts
    assert counts["manifests imported"] == "7"
    after = snapshot(tree)
    added = set(after) - set(before)
    assert all(name.startswith(str(V2 / "registry.db")) for name in added), added  # the database, nothing else
    assert {name: after[name] for name in before} == before, "no file of the tree may change, move or be copied"

    server.storage = {"filesystem": {"rootdirectory": str(tree / V2)}, "delete": {"enabled": True}}
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert_referrers(client, pushed)
        pull_and_compare(server, pushed, tmp_path / "back")
    finally:
        server.stop()


def test_half_written_tree_is_reported_not_imported(pushed: Pushed, tmp_path: Path) -> None:
    tree = tree_copy(pushed, tmp_path / "distribution")
    v2 = tree / V2
    blobs = v2 / "blobs" / "sha256"
    layer = pushed.tool.layers[0].digest.removeprefix("sha256:")
    shutil.rmtree(blobs / layer[:2] / layer)  # the nested repository's only layer: linked, but gone
    config_blob = pushed.image.config.digest.removeprefix("sha256:")
    (blobs / config_blob[:2] / config_blob / "data").write_bytes(b"not the config")  # bytes that do not match
    ghost = v2 / "repositories" / REPO / "_manifests" / "tags" / "ghost" / "current"
    ghost.mkdir(parents=True)
    (ghost / "link").write_text("sha256:" + "0" * 64)
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server)

    result = command("import", str(config), "--from", "distribution", str(tree))
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem: ")]
    assert any(f"links blob {pushed.tool.layers[0].digest}" in p and NESTED in p for p in problems), problems
    assert any(f"blob {pushed.image.config.digest}: content hashes to" in p for p in problems), problems
    assert any(f"{REPO}:ghost points to sha256:{'0' * 64}" in p for p in problems), problems
    # the images that need those blobs are not imported; the rest is
    assert any(f"{NESTED}@{pushed.tool.manifest.digest}" in p for p in problems), problems
    assert any(f"{REPO}@{pushed.image.manifest.digest}" in p for p in problems), problems

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["multi", "sbom"]
            assert client.head(f"/v2/{REPO}/manifests/v1").status_code == 404
            assert client.head(f"/v2/{NESTED}/blobs/{pushed.tool.layers[0].digest}").status_code == 404
            assert client.head(f"/v2/{REPO}/blobs/{pushed.image.config.digest}").status_code == 404
        back = OciLayout(tmp_path / "back")
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{server.host}/{REPO}:multi", back.ref("multi"))
        for image in pushed.platforms:
            for blob in (image.manifest, image.config, *image.layers):
                assert back.read_blob(blob.digest) == pushed.layout.read_blob(blob.digest)
    finally:
        server.stop()


def blob_file(root: Path, digest: str) -> Path:
    encoded = digest.removeprefix("sha256:")
    return root / "blobs" / "sha256" / encoded[:2] / encoded / "data"


def test_fsck_finds_altered_and_missing_blobs_and_repair_sets_them_aside(pushed: Pushed, tmp_path: Path) -> None:
    tree = tree_copy(pushed, tmp_path / "distribution")
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server)
    assert command("import", str(config), "--from", "distribution", str(tree)).returncode == 0
    clean = command("fsck", str(config))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert summary(clean)["problems"] == "0"

    altered = pushed.image.layers[0]
    path = blob_file(server.data_dir, altered.digest)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF  # one bit of rot, same size
    path.write_bytes(bytes(damaged))
    removed = pushed.tool.layers[0]
    blob_file(server.data_dir, removed.digest).unlink()

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get(f"/v2/{REPO}/blobs/{altered.digest}").content == bytes(damaged)  # what fsck is for

            found = command("fsck", str(config))
            assert found.returncode == 1, found.stdout + found.stderr
            assert f"problem: blob {altered.digest} is corrupt" in found.stdout
            assert f"problem: blob {removed.digest} is missing from storage" in found.stdout
            # the images those blobs break, by the names users know them by
            for name in (f"{REPO}:v1 ({pushed.image.manifest.digest})", f"{REPO}:stable", f"{NESTED}:latest"):
                assert f"broken image: {name}" in found.stdout, found.stdout
            assert path.read_bytes() == bytes(damaged), "fsck without --repair changes nothing"

            repaired = command("fsck", str(config), "--repair")
            assert repaired.returncode == 1, "the broken images remain broken until their blobs are pushed again"
            aside = list((server.data_dir / "lost+found" / "sha256" / altered.digest.removeprefix("sha256:")).iterdir())
            assert [p.read_bytes() for p in aside] == [bytes(damaged)], "moved aside, never deleted"
            assert not path.exists()
            for repo, blob in ((REPO, altered), (NESTED, removed)):
                response = client.get(f"/v2/{repo}/blobs/{blob.digest}")
                assert response.status_code == 404
                assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
                assert client.head(f"/v2/{repo}/blobs/{blob.digest}").status_code == 404
            assert f"{REPO}@{pushed.image.manifest.digest} lacks blob {altered.digest}" in repaired.stdout

            # a client pushing the images again (its HEAD now says the blobs are missing) makes them whole
            push(pushed.layout, "v1", f"{server.host}/{REPO}:v1")
            push(pushed.layout, "tool", f"{server.host}/{NESTED}:latest")
            assert client.get(f"/v2/{REPO}/blobs/{altered.digest}").content == pushed.layout.read_blob(altered.digest)
        healthy = command("fsck", str(config))
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        pull_and_compare(server, pushed, tmp_path / "back")
    finally:
        server.stop()


def test_usage_errors_exit_2(pushed: Pushed, tmp_path: Path) -> None:
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server)
    not_a_tree = command("import", str(config), "--from", "distribution", str(tmp_path))
    assert not_a_tree.returncode == 2
    assert "is not a CNCF Distribution storage tree" in not_a_tree.stderr
    unknown = command("import", str(config), "--from", "quay", str(pushed.tree))
    assert unknown.returncode == 2
    assert "unknown source 'quay'" in unknown.stderr
    assert command("import", str(config)).returncode == 2  # no source at all
    assert not server.data_dir.exists(), "a usage error creates nothing"

    server.extra_config = {"database": {"url": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"}}
    unreachable = command("fsck", str(write_config(server)))
    assert unreachable.returncode == 1
    assert "cannot prepare the data directory and database" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_fsck_names_the_images_a_deleted_blob_link_breaks(pushed: Pushed, tmp_path: Path) -> None:
    """A client may DELETE a layer an image still uses (the API allows it, as Distribution's does): the bytes are
    fine, the reference is not, and fsck says which images no longer pull."""
    tree = tree_copy(pushed, tmp_path / "distribution")
    server = RegistryProcess(tmp_path / "ours", kind="ours")
    config = write_config(server)
    assert command("import", str(config), "--from", "distribution", str(tree)).returncode == 0
    layer = pushed.tool.layers[0].digest
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.delete(f"/v2/{NESTED}/blobs/{layer}").status_code == 202
        result = command("fsck", str(config))
    finally:
        server.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{NESTED}@{pushed.tool.manifest.digest} references blob {layer}, which the repository does not serve" in (
        result.stdout
    )
    assert f"broken image: {NESTED}:latest ({pushed.tool.manifest.digest})" in result.stdout
    assert f"broken image: {NESTED}:docker " in result.stdout
    assert f"broken image: {REPO}:" not in result.stdout
    assert f"broken image: {REPO}@" not in result.stdout
    counts = summary(result)
    assert (counts["corrupt"], counts["missing"], counts["dangling references"]) == ("0", "0", "2")


def test_import_and_fsck_with_postgresql(pushed: Pushed, tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    """The same queries on PostgreSQL (anti-joins, row-value IN lists, batches of writes in one transaction), on a
    database of its own: fsck checks a whole database, which the session's shared one is not the import's alone."""
    tree = tree_copy(pushed, tmp_path / "distribution")
    database = {"url": postgres_cluster.new_database()}
    server = RegistryProcess(tmp_path / "ours", kind="ours", extra_config={"database": database})
    config = write_config(server)
    first = command("import", str(config), "--from", "distribution", str(tree))
    assert first.returncode == 0, first.stdout + first.stderr
    assert summary(first)["manifests imported"] == "7"
    again = summary(command("import", str(config), "--from", "distribution", str(tree)))
    assert (again["links imported"], again["manifests imported"], again["tags imported"]) == ("0", "0", "0")

    altered = pushed.tool.layers[0]
    blob_file(server.data_dir, altered.digest).write_bytes(b"rot")
    repaired = command("fsck", str(config), "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert f"problem: blob {altered.digest} is corrupt" in repaired.stdout
    assert f"broken image: {NESTED}:latest ({pushed.tool.manifest.digest})" in repaired.stdout
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get(f"/v2/{NESTED}/blobs/{altered.digest}").status_code == 404
    finally:
        server.stop()
    # Distribution's tree still holds the good bytes: importing again restores the blob, and the image with it
    restored = command("import", str(config), "--from", "distribution", str(tree))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert summary(restored)["links imported"] == "1"
    checked = command("fsck", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_import_copies_into_another_driver_and_fsck_repairs_through_it(pushed: Pushed, tmp_path: Path) -> None:
    """Both commands use only the storage driver interface: here the example driver (flat files named by their
    percent-encoded paths), which shares nothing with Distribution's layout."""
    require_module(EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL)
    tree = tree_copy(pushed, tmp_path / "distribution")
    root = tmp_path / "example"
    server = RegistryProcess(tmp_path / "ours", kind="ours", storage={"example": {"rootdirectory": str(root)}})
    config = write_config(server)
    result = command("import", str(config), "--from", "distribution", str(tree))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result)["manifests imported"] == "7"

    altered = pushed.platforms[1].layers[1]
    stored = root / "objects" / quote(f"blobs/sha256/{altered.digest[7:9]}/{altered.digest[7:]}/data", safe="")
    stored.write_bytes(b"rot")
    repaired = command("fsck", str(config), "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert f"problem: blob {altered.digest} is corrupt" in repaired.stdout
    assert f"broken image: {REPO}:multi ({pushed.index.digest})" in repaired.stdout
    assert f"broken image: {REPO}@{pushed.platforms[1].manifest.digest}" in repaired.stdout
    aside = [p for p in (root / "objects").iterdir() if p.name.startswith(quote("lost+found/", safe=""))]
    assert [p.read_bytes() for p in aside] == [b"rot"]
    assert not stored.exists()

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get(f"/v2/{REPO}/blobs/{altered.digest}").status_code == 404
        back = OciLayout(tmp_path / "back")
        skopeo("copy", "--src-tls-verify=false", f"docker://{server.host}/{REPO}:v1", back.ref("v1"))
        for blob in (pushed.image.manifest, pushed.image.config, *pushed.image.layers):
            assert back.read_blob(blob.digest) == pushed.layout.read_blob(blob.digest)
    finally:
        server.stop()
