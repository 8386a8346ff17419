"""The Dockerfile, built and run for real: a base root filesystem made from Debian's packages with mmdebstrap (no
image registry is reachable here), the image built on it with buildah (the project's wheels built on the host and
installed with pip's `--no-index`), run with podman as its non-root user on a free loopback port, then an image
pushed to it and pulled back with skopeo, and its health check run."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e_images import OciLayout
from e2e_tools import require, run, skopeo_copy
from registry_process import free_port, implementation

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(implementation() != "ours", reason="builds our own image"),
]

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/docker-registry-test-base:bookworm"
IMAGE = "localhost/docker-registry-test:latest"


@pytest.fixture(scope="module")
def podman_args() -> Iterator[list[str]]:
    """A private overlay store shared by buildah and podman for this module (podman wants a short runroot).

    Overlay rather than the other e2e tests' vfs: vfs copies the whole root filesystem at every step, which made
    this test take 4.5 minutes instead of about 2; `system reset` unmounts what overlay mounted."""
    root = Path(tempfile.mkdtemp(prefix="dr3-image-"))
    runroot = Path(tempfile.mkdtemp(prefix="dr3-rr-"))
    args = ["--storage-driver", "overlay", "--root", str(root / "storage"), "--runroot", str(runroot)]
    try:
        yield args
    finally:
        run(["buildah", *args, "rm", "--all"], check=False)
        run(["podman", *args, "system", "reset", "--force"], check=False)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="module")
def image(podman_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    require("mmdebstrap", "buildah", "podman", "skopeo", root=True)
    work = tmp_path_factory.mktemp("image")
    rootfs = work / "rootfs.tar"
    # a minimal Debian with Python and venv: what python:3.11-slim gives elsewhere
    run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs)])
    run(["podman", *podman_args, "import", str(rootfs), BASE])
    wheels = ROOT / "wheels"  # inside the build context; .dockerignore does not exclude it
    shutil.rmtree(wheels, ignore_errors=True)
    try:
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
        run([*pip_wheel, "--wheel-dir", str(wheels), str(ROOT / "core"), f"{ROOT}[postgres]"], timeout=300)
        build_backend = _build_requirements()
        run([*pip_wheel, "--wheel-dir", str(wheels), *build_backend], timeout=300)  # pip builds /src in the image
        run(
            [
                "buildah",
                *podman_args,
                "bud",
                "--quiet",
                "--pull=never",
                "--isolation=chroot",
                "--format=docker",  # the OCI image format has no HEALTHCHECK: buildah would drop it
                "--build-arg",
                f"BASE={BASE}",
                "--build-arg",
                "PIP_ARGS=--no-index --find-links=/src/wheels",
                "-t",
                IMAGE,
                str(ROOT),
            ],
            timeout=600,
        )
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    return IMAGE


def _build_requirements() -> list[str]:
    requires: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    core: list[str] = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["build-system"]["requires"]
    return sorted({*requires, *core})


def test_image_runs_as_non_root_serves_push_and_pull_and_is_healthy(
    image: str, podman_args: list[str], tmp_path: Path
) -> None:
    config = json.loads(run(["podman", *podman_args, "image", "inspect", image]).stdout)[0]["Config"]
    assert config["User"] == "registry"
    assert "/var/lib/registry" in config["Volumes"]
    assert config["Entrypoint"] == ["docker-registry", "serve"]

    port = free_port()
    name = f"dr3-test-{port}"
    podman = ["podman", *podman_args, "--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", "runc"]
    run(
        [
            *podman,
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",  # on loopback only: REGISTRY_HTTP_ADDR binds 127.0.0.1
            # this sandbox refuses podman's default limits (raising RLIMIT_NOFILE and NPROC) and crun's cgroup
            # handling (hybrid cgroups): limits it may set, and runc
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "-e",
            f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}",
            "-e",
            f"REGISTRY_HEALTHCHECK_URL=http://127.0.0.1:{port}/readyz",
            image,
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, run([*podman, "logs", name], check=False).stdout
            time.sleep(0.3)
        assert run([*podman, "exec", name, "id", "-un"]).stdout.strip() == "registry"
        assert run([*podman, "healthcheck", "run", name], check=False).returncode == 0

        layout = OciLayout(tmp_path / "layout")
        pushed = layout.add_image("app")
        ref = f"docker://127.0.0.1:{port}/image/app:v1"
        skopeo_copy("--dest-tls-verify=false", layout.ref("app"), ref)
        out = tmp_path / "out"
        skopeo_copy("--src-tls-verify=false", ref, f"oci:{out}:app")
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == pushed.manifest.digest
        tags = httpx.get(f"{url}/v2/image/app/tags/list", timeout=10).json()
        assert tags["tags"] == ["v1"]
        # the data went to the volume, owned by the non-root user
        listing = run([*podman, "exec", name, "ls", "-ln", "/var/lib/registry"]).stdout
        assert "registry.db" in listing
    finally:
        run([*podman, "rm", "--force", name], check=False)
