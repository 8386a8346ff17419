"""buildah against the registry: build on a pulled base, push, read back; push a multi-platform manifest list."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from e2e_http import assert_platforms_served, get_blob, get_manifest
from e2e_images import OciLayout
from e2e_tools import Cli, require, run, skopeo_copy
from registry_process import RegistryProcess


@pytest.fixture
def buildah(storage_args: list[str], containers_env: dict[str, str]) -> Cli:
    """`buildah(*args)` on a private vfs store, with the test registry configured as insecure."""
    require("buildah", "skopeo")

    def call(*args: str) -> str:
        return run(["buildah", *storage_args, *args], env=containers_env).stdout.strip()

    return call


def push_for_digest(buildah: Cli, tmp_path: Path, command: list[str], source: str, destination: str) -> str:
    """`buildah <command> SOURCE docker://DESTINATION` over plain HTTP; returns the digest buildah says it pushed."""
    digest_file = tmp_path / "digest"
    buildah(*command, "--tls-verify=false", "--digestfile", str(digest_file), source, f"docker://{destination}")
    return digest_file.read_text().strip()


def test_build_on_a_pulled_base_push_and_pull_back(
    buildah: Cli, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    base = layout.add_image("base")
    skopeo_copy("--dest-tls-verify=false", layout.ref("base"), f"docker://{registry.host}/{repo}:base")

    container = buildah("from", "--quiet", "--tls-verify=false", f"docker://{registry.host}/{repo}:base")
    added = tmp_path / "added.txt"
    added.write_bytes(b"built by buildah for the e2e test\n")
    buildah("copy", container, str(added), "/e2e/added.txt")
    buildah("config", "--label", "e2e.built=yes", container)
    buildah("commit", "--quiet", container, "e2e-built")
    digest = push_for_digest(buildah, tmp_path, ["push"], "e2e-built", f"{registry.host}/{repo}:built")

    served = get_manifest(client, repo, "built")
    assert served.digest == digest
    layers = [layer["digest"] for layer in served.json()["layers"]]
    assert len(layers) == len(base.layers) + 1
    for layer in layers:
        assert get_blob(client, repo, layer)

    buildah("rm", "--all")
    buildah("rmi", "--all", "--force")
    assert buildah("images", "--quiet") == ""
    container = buildah("from", "--quiet", "--tls-verify=false", f"docker://{registry.host}/{repo}:built")
    root = Path(buildah("mount", container))
    try:
        assert (root / "e2e" / "added.txt").read_bytes() == added.read_bytes()
        for path, content in base.files.items():
            assert (root / path).read_bytes() == content
    finally:
        buildah("umount", container)
        buildah("rm", container)
    image = json.loads(buildah("inspect", "--type", "image", f"{registry.host}/{repo}:built"))
    assert image["OCIv1"]["config"]["Labels"]["e2e.built"] == "yes"


def test_manifest_list_push_all_and_inspect(
    buildah: Cli, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    images = [layout.add_image(arch, architecture=arch) for arch in ("amd64", "arm64")]
    buildah("manifest", "create", "e2e-list")
    for image in images:
        buildah("manifest", "add", "e2e-list", layout.ref(image.architecture))
    digest = push_for_digest(
        buildah, tmp_path, ["manifest", "push", "--all"], "e2e-list", f"{registry.host}/{repo}:list"
    )

    served = get_manifest(client, repo, "list")
    assert served.digest == digest
    assert_platforms_served(client, repo, served, layout, images)
