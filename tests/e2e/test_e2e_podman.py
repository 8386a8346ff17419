"""podman against the registry: push, pull back into an empty store, one platform out of an index, zstd, search."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from e2e_http import get_manifest
from e2e_images import Image, OciLayout
from e2e_tools import Cli, require, run, skopeo_copy
from oci_content import OCI_LAYER_ZSTD
from registry_process import RegistryProcess


@pytest.fixture
def podman(storage_args: list[str], containers_env: dict[str, str]) -> Cli:
    """`podman(*args)` on a private vfs store, with the test registry configured as insecure."""
    require("podman", "skopeo")
    base = ["podman", *storage_args, "--cgroup-manager=cgroupfs", "--events-backend=file"]

    def call(*args: str) -> str:
        return run([*base, *args], env=containers_env).stdout

    return call


def inspect(podman: Cli, name: str) -> dict:
    return json.loads(podman("image", "inspect", name))[0]


def tag_from_layout(podman: Cli, layout: OciLayout, tag: str, image: Image, name: str) -> None:
    """Put the layout's image `tag` into podman's store under `name`, ready to push."""
    podman("pull", "--quiet", layout.ref(tag))
    podman("tag", image.config.digest.removeprefix("sha256:"), name)


def pull_into_empty_store(podman: Cli, layout: OciLayout, image: Image, name: str) -> dict:
    """Forget every local image, pull `name` back from the registry, check it is `image`; returns its inspection."""
    podman("rmi", "--all", "--force")
    assert podman("images", "--quiet").strip() == ""
    podman("pull", "--tls-verify=false", name)
    pulled = inspect(podman, name)
    assert pulled["Id"] == image.config.digest.removeprefix("sha256:")
    assert pulled["RootFS"]["Layers"] == json.loads(layout.read_blob(image.config.digest))["rootfs"]["diff_ids"]
    return pulled


def test_push_remove_pull_roundtrip(
    podman: Cli, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1")
    name = f"{registry.host}/{repo}:v1"
    tag_from_layout(podman, layout, "v1", image, name)
    digest_file = tmp_path / "digest"
    podman("push", "--tls-verify=false", "--digestfile", str(digest_file), name)
    digest = digest_file.read_text().strip()

    served = get_manifest(client, repo, "v1")
    assert served.digest == digest
    assert served.json()["config"]["digest"] == image.config.digest

    pulled = pull_into_empty_store(podman, layout, image, name)
    assert pulled["Digest"] == digest
    assert pulled["Architecture"] == "amd64"


def test_pull_one_architecture_from_an_index(
    podman: Cli, registry: RegistryProcess, layout: OciLayout, repo: str
) -> None:
    index, images = layout.add_index("multi")
    skopeo_copy("--all", "--dest-tls-verify=false", layout.ref("multi"), f"docker://{registry.host}/{repo}:multi")
    name = f"{registry.host}/{repo}:multi"
    for image in images:
        podman("pull", "--tls-verify=false", "--arch", image.architecture, name)
        pulled = inspect(podman, name)
        assert pulled["Architecture"] == image.architecture
        assert pulled["Id"] == image.config.digest.removeprefix("sha256:")
        assert pulled["Digest"] == index.digest


def test_zstd_layers_push_and_pull_back(
    podman: Cli, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1")
    name = f"{registry.host}/{repo}:zstd"
    tag_from_layout(podman, layout, "v1", image, name)
    podman("push", "--tls-verify=false", "--format", "oci", "--compression-format", "zstd", name)

    manifest = get_manifest(client, repo, "zstd").json()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_ZSTD] * len(image.layers)

    pull_into_empty_store(podman, layout, image, name)


def test_search_lists_repositories_and_tags(
    podman: Cli, registry: RegistryProcess, layout: OciLayout, repo: str
) -> None:
    """`podman search` reads the catalog and the tag list: both must show what was pushed."""
    for tag in ("a", "b"):
        layout.add_image(tag)
        run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                layout.ref(tag),
                f"docker://{registry.host}/{repo}:{tag}",
            ]
        )
    found = podman(
        "search", "--tls-verify=false", "--limit", "1000", "--format", "{{.Name}}", f"{registry.host}/{repo}"
    )
    assert f"{registry.host}/{repo}" in found.split()
    # podman 4.3 ignores --format with --list-tags: read the NAME / TAG table.
    table = podman("search", "--tls-verify=false", "--list-tags", f"{registry.host}/{repo}").splitlines()
    assert table[0].split() == ["NAME", "TAG"]
    assert sorted(tuple(row.split()) for row in table[1:]) == [(f"{registry.host}/{repo}", t) for t in ("a", "b")]
