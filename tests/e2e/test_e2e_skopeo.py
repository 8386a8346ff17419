"""skopeo against the registry: copies both ways in OCI and Docker schema 2, multi-arch indexes, tags, delete, sync."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from e2e_http import Manifest, assert_platforms_served, get_blob, get_manifest
from e2e_images import OciLayout
from e2e_tools import require, run
from oci_content import DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, sha256
from registry_process import RegistryProcess


@pytest.fixture(autouse=True)
def _skopeo() -> None:
    require("skopeo")


def skopeo(*args: str) -> str:
    return run(["skopeo", "--insecure-policy", *args]).stdout


def copy_in(
    client: httpx.Client, registry: RegistryProcess, layout: OciLayout, repo: str, tag: str, *options: str
) -> Manifest:
    """Copy the layout's `tag` into the registry under the same tag; returns the manifest the registry serves."""
    skopeo("copy", *options, "--dest-tls-verify=false", layout.ref(tag), f"docker://{registry.host}/{repo}:{tag}")
    return get_manifest(client, repo, tag)


def read_dir_image(path: Path) -> tuple[bytes, dict[str, bytes]]:
    """A `dir:` transport image: its manifest bytes and every other file, by digest."""
    blobs = {"sha256:" + f.name: f.read_bytes() for f in path.iterdir() if f.name not in ("manifest.json", "version")}
    return (path / "manifest.json").read_bytes(), blobs


def test_copy_oci_roundtrip_preserves_every_byte(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1")
    served = copy_in(client, registry, layout, repo, "v1", "--format", "oci")
    assert served.digest == image.manifest.digest
    assert served.media_type == OCI_MANIFEST
    assert served.body == layout.read_blob(image.manifest.digest)
    for blob in (image.config, *image.layers):
        assert get_blob(client, repo, blob.digest) == layout.read_blob(blob.digest)

    back = OciLayout(tmp_path / "back")
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:v1", back.ref("v1"))
    index = json.loads((back.path / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest.digest]
    for blob in (image.manifest, image.config, *image.layers):
        assert back.read_blob(blob.digest) == layout.read_blob(blob.digest)


def test_copy_as_docker_v2s2_and_back(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    image = layout.add_image("v1")
    served = copy_in(client, registry, layout, repo, "v1", "--format", "v2s2")
    assert served.media_type == DOCKER_MANIFEST
    manifest = served.json()
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert manifest["config"]["digest"] == image.config.digest
    assert [layer["digest"] for layer in manifest["layers"]] == [layer.digest for layer in image.layers]

    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:v1", f"dir:{tmp_path / 'dir'}")
    manifest_bytes, blobs = read_dir_image(tmp_path / "dir")
    assert manifest_bytes == served.body
    for blob in (image.config, *image.layers):
        assert blobs[blob.digest] == layout.read_blob(blob.digest)

    # And from that directory back into another repository, still in schema 2: the digest must not change.
    skopeo("copy", "--dest-tls-verify=false", f"dir:{tmp_path / 'dir'}", f"docker://{registry.host}/{repo}-copy:v1")
    assert get_manifest(client, f"{repo}-copy", "v1").digest == served.digest


def test_copy_all_platforms_of_an_index(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    index, images = layout.add_index("multi")
    served = copy_in(client, registry, layout, repo, "multi", "--all")
    assert served.media_type == OCI_INDEX
    assert served.digest == index.digest
    assert_platforms_served(client, repo, served, layout, images)

    back = OciLayout(tmp_path / "back")
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:multi", back.ref("multi"))
    assert json.loads((back.path / "index.json").read_bytes())["manifests"][0]["digest"] == index.digest
    for img in images:
        for blob in (img.manifest, img.config, *img.layers):
            assert back.read_blob(blob.digest) == layout.read_blob(blob.digest)

    arm = json.loads(
        skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64", f"docker://{registry.host}/{repo}:multi")
    )
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == [layer.digest for img in images if img.architecture == "arm64" for layer in img.layers]


def test_list_tags_inspect_and_delete(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str
) -> None:
    first = layout.add_image("one")
    second = layout.add_image("two", architecture="arm64")
    for tag in ("one", "two"):
        skopeo("copy", "--dest-tls-verify=false", layout.ref(tag), f"docker://{registry.host}/{repo}:{tag}")

    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/{repo}"))
    assert tags["Repository"] == f"{registry.host}/{repo}"
    assert sorted(tags["Tags"]) == ["one", "two"]

    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/{repo}:two"))
    assert info["Digest"] == second.manifest.digest
    assert info["Architecture"] == "arm64"
    assert info["Layers"] == [layer.digest for layer in second.layers]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:one")
    assert sha256(raw.encode()) == first.manifest.digest
    config = skopeo("inspect", "--config", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:one")
    assert sha256(config.encode()) == first.config.digest

    skopeo("delete", "--tls-verify=false", f"docker://{registry.host}/{repo}:one")
    assert client.get(f"/v2/{repo}/manifests/{first.manifest.digest}").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/one").status_code == 404
    assert get_manifest(client, repo, "two").digest == second.manifest.digest
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/{repo}"))
    assert tags["Tags"] == ["two"]


def test_sync_registry_to_dir_and_to_registry(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str, tmp_path: Path
) -> None:
    images = {tag: layout.add_image(tag) for tag in ("a", "b")}
    for tag in images:
        skopeo("copy", "--dest-tls-verify=false", layout.ref(tag), f"docker://{registry.host}/{repo}:{tag}")

    skopeo(
        "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", f"{registry.host}/{repo}", str(tmp_path)
    )
    name = repo.rsplit("/", 1)[-1]
    for tag, image in images.items():
        manifest_bytes, blobs = read_dir_image(tmp_path / f"{name}:{tag}")
        assert sha256(manifest_bytes) == image.manifest.digest
        for layer in image.layers:
            assert blobs[layer.digest] == layout.read_blob(layer.digest)

    skopeo(
        "sync",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"{registry.host}/{repo}",
        f"{registry.host}/{repo}-mirror",
    )
    for tag, image in images.items():
        assert get_manifest(client, f"{repo}-mirror/{name}", tag).digest == image.manifest.digest


def test_copy_all_as_docker_manifest_list(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, repo: str
) -> None:
    _, images = layout.add_index("multi")
    skopeo(
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        layout.ref("multi"),
        f"docker://{registry.host}/{repo}:multi",
    )

    served = get_manifest(client, repo, "multi")
    assert served.media_type == DOCKER_LIST
    children = {m["platform"]["architecture"]: m for m in served.json()["manifests"]}
    assert set(children) == {img.architecture for img in images}
    for img in images:
        child = children[img.architecture]
        assert child["mediaType"] == DOCKER_MANIFEST
        manifest = get_manifest(client, repo, child["digest"])
        assert manifest.media_type == DOCKER_MANIFEST
        assert len(manifest.body) == child["size"]
        assert manifest.json()["config"]["digest"] == img.config.digest
