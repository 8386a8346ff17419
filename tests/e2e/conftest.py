"""Fixtures for the end-to-end tests: real clients against the session registry, fed from local OCI layouts."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_daemons import Containerd, Dockerd
from e2e_images import OciLayout
from e2e_tools import require
from registry_process import RegistryProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def layout(tmp_path: Path) -> OciLayout:
    """A fresh OCI image layout for one test; images added to it hold new random layers."""
    return OciLayout(tmp_path / "layout")


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of this test's own (the session registry is shared)."""
    return "e2e/" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")


@pytest.fixture
def containers_env(registry: RegistryProcess, tmp_path: Path) -> dict[str, str]:
    """Environment for podman, buildah and skopeo: the test registry is insecure (plain HTTP), nothing else."""
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    runtime_dir = tmp_path / "xdg-runtime"
    runtime_dir.mkdir(mode=0o700)
    return {"CONTAINERS_REGISTRIES_CONF": str(conf), "XDG_RUNTIME_DIR": str(runtime_dir)}


@pytest.fixture
def storage_args(tmp_path: Path) -> Iterator[list[str]]:
    """Global podman/buildah options for a private vfs image store (plain directories: nothing to unmount).

    podman refuses a runroot longer than 50 characters, hence a short directory of its own under /tmp.
    """
    runroot = tempfile.mkdtemp(prefix="dr3-runroot-")
    try:
        yield ["--storage-driver", "vfs", "--root", str(tmp_path / "storage"), "--runroot", runroot]
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd(registry: RegistryProcess) -> Iterator[Dockerd]:
    require("dockerd", "docker", "skopeo", root=True)
    daemon = Dockerd(insecure_registry=registry.host)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    require("containerd", "ctr", root=True)
    daemon = Containerd()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
