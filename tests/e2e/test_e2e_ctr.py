"""containerd's `ctr` against the registry: import, push, remove, pull back; single images and indexes."""

from __future__ import annotations

from pathlib import Path

import httpx

from e2e_daemons import Containerd
from e2e_http import get_blob, get_manifest
from e2e_images import Image, OciLayout
from e2e_tools import run
from registry_process import RegistryProcess


def ctr(daemon: Containerd, *args: str, text: bool = True) -> str:
    return run([*daemon.ctr, *args], text=text).stdout


def content(daemon: Containerd, digest: str) -> bytes:
    return run([*daemon.ctr, "content", "get", digest], text=False).stdout


def image_digest(daemon: Containerd, name: str) -> str:
    for line in ctr(daemon, "images", "ls").splitlines()[1:]:
        fields = line.split()
        if fields[0] == name:
            return fields[2]
    raise AssertionError(f"{name} not in ctr images ls")


def push_then_pull_back(daemon: Containerd, layout: OciLayout, tag: str, name: str, tmp_path: Path) -> None:
    """Import the layout's `tag` as `name`, push it, forget it entirely, and pull it back from the registry."""
    archive = layout.write_archive(tmp_path / f"{tag}.oci.tar")
    ctr(
        daemon,
        "images",
        "import",
        "--all-platforms",
        "--snapshotter",
        "native",
        "--base-name",
        name.rsplit(":", 1)[0],
        str(archive),
    )
    ctr(daemon, "images", "push", "--plain-http", name)
    ctr(daemon, "images", "rm", "--sync", name)
    ours = {"sha256:" + blob.name for blob in (layout.path / "blobs" / "sha256").iterdir()}
    left = ours & set(ctr(daemon, "content", "ls", "--quiet").split())
    assert not left, f"content left after removal, the pull would not fetch it: {left}"
    ctr(daemon, "images", "pull", "--plain-http", "--all-platforms", "--snapshotter", "native", name)


def assert_same_blobs(daemon: Containerd, client: httpx.Client, repo: str, layout: OciLayout, image: Image) -> None:
    for blob in (image.manifest, image.config, *image.layers):
        assert content(daemon, blob.digest) == layout.read_blob(blob.digest)
        if blob is not image.manifest:
            assert get_blob(client, repo, blob.digest) == layout.read_blob(blob.digest)


def round_trip(
    daemon: Containerd,
    registry: RegistryProcess,
    client: httpx.Client,
    layout: OciLayout,
    repo: str,
    tag: str,
    digest: str,
    tmp_path: Path,
) -> None:
    """`push_then_pull_back` of the layout's `tag`; the registry serves, and ctr resolved, exactly `digest`."""
    name = f"{registry.host}/{repo}:{tag}"
    push_then_pull_back(daemon, layout, tag, name, tmp_path)
    served = get_manifest(client, repo, tag)
    assert served.digest == digest
    assert served.body == layout.read_blob(digest)
    assert image_digest(daemon, name) == digest


def test_import_push_pull_single_image(
    containerd: Containerd,
    registry: RegistryProcess,
    client: httpx.Client,
    layout: OciLayout,
    repo: str,
    tmp_path: Path,
) -> None:
    image = layout.add_image("v1")
    round_trip(containerd, registry, client, layout, repo, "v1", image.manifest.digest, tmp_path)
    assert_same_blobs(containerd, client, repo, layout, image)
    unpacked = {p.relative_to(s).as_posix(): p for s in containerd.snapshot_root.iterdir() for p in s.rglob("*.bin")}
    for path, data in image.files.items():
        assert unpacked[path].read_bytes() == data


def test_import_push_pull_multi_platform_index(
    containerd: Containerd,
    registry: RegistryProcess,
    client: httpx.Client,
    layout: OciLayout,
    repo: str,
    tmp_path: Path,
) -> None:
    index, images = layout.add_index("multi")
    round_trip(containerd, registry, client, layout, repo, "multi", index.digest, tmp_path)
    for image in images:
        assert get_manifest(client, repo, image.manifest.digest).body == layout.read_blob(image.manifest.digest)
        assert_same_blobs(containerd, client, repo, layout, image)
