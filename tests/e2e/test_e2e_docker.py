"""The Docker engine against the registry: push, pull back after removal, mounts, manifest lists, OCI indexes."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import httpx

from e2e_daemons import Dockerd
from e2e_http import get_manifest
from e2e_images import OciLayout
from e2e_tools import run, skopeo_copy
from oci_content import DOCKER_LIST, DOCKER_MANIFEST
from registry_process import RegistryProcess


def docker(daemon: Dockerd, *args: str) -> str:
    return run(["docker", *args], env=daemon.env).stdout


def load(daemon: Dockerd, layout: OciLayout, tag: str, name: str, tmp_path: Path) -> None:
    """Load a layout's image into the engine under `name` (docker 20 cannot load OCI archives: convert with skopeo)."""
    archive = tmp_path / f"{tag}.docker.tar"
    skopeo_copy(layout.ref(tag), f"docker-archive:{archive}:{name}")
    docker(daemon, "load", "--input", str(archive))


def pushed_digest(output: str) -> str:
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
    assert match, f"no digest in docker push output:\n{output}"
    return match.group(1)


def inspect(daemon: Dockerd, name: str) -> dict:
    return json.loads(docker(daemon, "image", "inspect", name))[0]


def file_in_image(daemon: Dockerd, name: str, path: str) -> bytes:
    """A file of the image's root filesystem, read from a created (never started) container."""
    container = docker(daemon, "create", name).strip()
    try:
        archive = run(["docker", "cp", f"{container}:{path}", "-"], env=daemon.env, text=False).stdout
    finally:
        docker(daemon, "rm", container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile(Path(path).name)
        assert member is not None
        return member.read()


def push_image(daemon: Dockerd, layout: OciLayout, tag: str, name: str, tmp_path: Path) -> str:
    load(daemon, layout, tag, name, tmp_path)
    return pushed_digest(docker(daemon, "push", name))


def test_push_remove_pull_roundtrip(
    dockerd: Dockerd, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1")
    name = f"{registry.host}/{repo}:v1"
    digest = push_image(dockerd, layout, "v1", name, tmp_path)

    served = get_manifest(client, repo, "v1")
    assert served.digest == digest
    assert served.media_type == DOCKER_MANIFEST
    assert served.json()["config"]["digest"] == image.config.digest

    docker(dockerd, "rmi", name)
    assert run(["docker", "image", "inspect", name], env=dockerd.env, check=False).returncode != 0
    docker(dockerd, "pull", name)
    pulled = inspect(dockerd, name)
    assert pulled["Id"] == image.config.digest
    assert f"{registry.host}/{repo}@{digest}" in pulled["RepoDigests"]
    assert pulled["Architecture"] == "amd64"
    for path, content in image.files.items():
        assert file_in_image(dockerd, name, "/" + path) == content


def test_manifest_list_create_and_push(
    dockerd: Dockerd, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    images = {arch: layout.add_image(arch, architecture=arch) for arch in ("amd64", "arm64")}
    digests = {
        arch: push_image(dockerd, layout, arch, f"{registry.host}/{repo}:{arch}", tmp_path)
        for arch, image in images.items()
    }

    list_name = f"{registry.host}/{repo}:list"
    docker(dockerd, "manifest", "create", "--insecure", list_name, *(f"{registry.host}/{repo}:{a}" for a in images))
    out = docker(dockerd, "manifest", "push", "--insecure", list_name)
    list_digest = re.findall(r"sha256:[0-9a-f]{64}", out)[-1]

    served = get_manifest(client, repo, "list")
    assert served.digest == list_digest
    assert served.media_type == DOCKER_LIST
    body = served.json()
    assert body["mediaType"] == DOCKER_LIST
    assert {m["platform"]["architecture"]: m["digest"] for m in body["manifests"]} == digests
    assert all(m["mediaType"] == DOCKER_MANIFEST for m in body["manifests"])

    docker(dockerd, "rmi", f"{registry.host}/{repo}:arm64")
    docker(dockerd, "pull", "--platform", "linux/arm64", list_name)
    pulled = inspect(dockerd, list_name)
    assert pulled["Id"] == images["arm64"].config.digest
    assert pulled["Architecture"] == "arm64"


def test_push_to_second_repository_mounts_layers_and_pull_by_digest(
    dockerd: Dockerd, registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1", layer_size=6 * 1024 * 1024)
    first, second = f"{registry.host}/{repo}:v1", f"{registry.host}/{repo}-second:v1"
    digest = push_image(dockerd, layout, "v1", first, tmp_path)

    again = docker(dockerd, "push", first)
    assert again.count("Layer already exists") == len(image.layers), again
    docker(dockerd, "tag", first, second)
    mounted = docker(dockerd, "push", second)
    assert mounted.count(f"Mounted from {repo}") == len(image.layers), mounted
    assert pushed_digest(mounted) == digest
    assert get_manifest(client, f"{repo}-second", "v1").digest == digest

    docker(dockerd, "rmi", first, second)
    by_digest = f"{registry.host}/{repo}-second@{digest}"
    docker(dockerd, "pull", by_digest)
    assert inspect(dockerd, by_digest)["Id"] == image.config.digest
    for path, content in image.files.items():
        assert file_in_image(dockerd, by_digest, "/" + path) == content


def test_pull_each_platform_of_an_oci_index(
    dockerd: Dockerd, registry: RegistryProcess, layout: OciLayout, repo: str
) -> None:
    """An OCI image index pushed by another client (skopeo): the engine resolves each platform from it."""
    _, images = layout.add_index("multi")
    name = f"{registry.host}/{repo}:multi"
    skopeo_copy("--all", "--dest-tls-verify=false", layout.ref("multi"), f"docker://{name}")
    for image in images:
        docker(dockerd, "pull", "--platform", f"linux/{image.architecture}", name)
        pulled = inspect(dockerd, name)
        assert pulled["Id"] == image.config.digest
        assert pulled["Architecture"] == image.architecture
        for path, content in image.files.items():
            assert file_in_image(dockerd, name, "/" + path) == content
        docker(dockerd, "rmi", name)
