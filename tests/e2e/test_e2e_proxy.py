"""Real clients pulling through the pull-through cache: skopeo and podman through mirror mode and a prefix, the
Docker engine with `registry-mirrors`; byte-identical to the upstream (CNCF Distribution 2.8), and the same pulls
still served once the upstream is killed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e_daemons import Containerd, Dockerd
from e2e_images import Image, OciLayout
from e2e_tools import require, run, skopeo_copy
from proxy_upstreams import distribution
from registry_process import RegistryProcess


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[RegistryProcess]:
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("CNCF Distribution is not installed: apt-get install docker-registry")
    process = distribution(tmp_path / "upstream")
    yield process
    process.stop()


def seed(layout: OciLayout, upstream: RegistryProcess, repo: str) -> Image:
    image = layout.add_image("v1", layer_count=3)
    skopeo_copy("--dest-tls-verify=false", layout.ref("v1"), f"docker://{upstream.host}/{repo}:v1")
    return image


def copy_out(source: str, dest: OciLayout) -> None:
    skopeo_copy("--src-tls-verify=false", f"docker://{source}", dest.ref("v1"))


def assert_same_image(copied: OciLayout, layout: OciLayout, image: Image) -> None:
    index = json.loads((copied.path / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest.digest]
    for blob in (image.manifest, image.config, *image.layers):
        assert copied.read_blob(blob.digest) == layout.read_blob(blob.digest)


def podman_pull(tmp_path: Path, name: str, registry: str, storage_args: list[str]) -> str:
    """Pull `name` into an empty private store; returns the image id (its config digest)."""
    conf = tmp_path / "registries.conf"
    conf.write_text(f'unqualified-search-registries = []\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n')
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "XDG_RUNTIME_DIR": str(runtime)}
    base = ["podman", *storage_args, "--cgroup-manager=cgroupfs", "--events-backend=file"]
    run([*base, "rmi", "--all", "--force"], env=env)
    run([*base, "pull", "--quiet", "--tls-verify=false", name], env=env)
    image_id: str = json.loads(run([*base, "image", "inspect", name], env=env).stdout)[0]["Id"]
    return image_id


def test_skopeo_and_podman_through_mirror_mode_and_prefix_then_upstream_killed(
    upstream: RegistryProcess,
    make_registry: object,
    layout: OciLayout,
    tmp_path: Path,
    storage_args: list[str],
) -> None:
    require("skopeo", "podman")
    image = seed(layout, upstream, "library/app")
    mirror = make_registry(kind="ours", extra_config={"proxy": {"remoteurl": upstream.url}})  # type: ignore[operator]
    upstreams = [{"prefix": "hub", "remoteurl": upstream.url}]
    prefixed = make_registry(kind="ours", extra_config={"proxy": {"upstreams": upstreams}})  # type: ignore[operator]
    pulls = [f"{mirror.host}/library/app:v1", f"{prefixed.host}/hub/library/app:v1"]

    for number, name in enumerate(pulls):
        copied = OciLayout(tmp_path / f"cold{number}")
        copy_out(name, copied)
        assert_same_image(copied, layout, image)
        registry = name.split("/", 1)[0]
        assert podman_pull(tmp_path, name, registry, storage_args) == image.config.digest.removeprefix("sha256:")

    upstream.stop()
    for number, name in enumerate(pulls):
        copied = OciLayout(tmp_path / f"warm{number}")
        copy_out(name, copied)
        assert_same_image(copied, layout, image)
        registry = name.split("/", 1)[0]
        assert podman_pull(tmp_path, name, registry, storage_args) == image.config.digest.removeprefix("sha256:")


class MirroredDockerd(Dockerd):
    """A Docker engine whose Docker Hub pulls go to `mirror` first (`registry-mirrors` in daemon.json)."""

    def __init__(self, mirror: str) -> None:
        super().__init__(insecure_registry=mirror)
        self.mirror = mirror

    def command(self) -> list[str]:
        return [*super().command(), f"--registry-mirror=http://{self.mirror}"]


def test_docker_engine_with_registry_mirrors(
    upstream: RegistryProcess, make_registry: object, layout: OciLayout, tmp_path: Path
) -> None:
    require("dockerd", "docker", "skopeo", root=True)
    image = seed(layout, upstream, "library/mirrored")
    mirror = make_registry(kind="ours", extra_config={"proxy": {"remoteurl": upstream.url}})  # type: ignore[operator]
    daemon = MirroredDockerd(mirror.host)
    daemon.start()
    try:
        run(["docker", "pull", "mirrored:v1"], env=daemon.env)
        inspected = json.loads(run(["docker", "image", "inspect", "mirrored:v1"], env=daemon.env).stdout)[0]
        assert inspected["Id"] == image.config.digest
        upstream.stop()
        run(["docker", "rmi", "mirrored:v1"], env=daemon.env)
        run(["docker", "pull", "mirrored:v1"], env=daemon.env)
        inspected = json.loads(run(["docker", "image", "inspect", "mirrored:v1"], env=daemon.env).stdout)[0]
        assert inspected["Id"] == image.config.digest
    finally:
        daemon.stop()


def test_containerd_mirror_with_ns_routed_to_the_upstream_of_that_prefix(
    upstream: RegistryProcess, make_registry: object, layout: OciLayout, tmp_path: Path, containerd: Containerd
) -> None:
    """containerd's `hosts.toml` mirror for docker.io: it asks `/v2/library/nsapp/...?ns=docker.io`, which the
    upstream whose prefix is `docker.io` serves, stored as `docker.io/library/nsapp`."""
    image = seed(layout, upstream, "library/nsapp")
    upstreams = [{"prefix": "docker.io", "remoteurl": upstream.url}]
    cache = make_registry(kind="ours", extra_config={"proxy": {"upstreams": upstreams}})  # type: ignore[operator]
    hosts = tmp_path / "certs.d" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "https://registry-1.docker.io"\n[host."http://{cache.host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    name = "docker.io/library/nsapp:v1"
    run([*containerd.ctr, "images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), "--snapshotter", "native", name])
    listed = run([*containerd.ctr, "images", "ls"]).stdout
    assert any(line.split()[0] == name and image.manifest.digest in line for line in listed.splitlines()[1:])
    catalog = httpx.get(f"{cache.url}/v2/_catalog").json()["repositories"]
    assert catalog == ["docker.io/library/nsapp"]
    run([*containerd.ctr, "images", "rm", "--sync", name])
