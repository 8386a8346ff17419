"""Running client binaries from the e2e tests: find them (skip or fail), run them, show their output on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

Cli = Callable[..., str]
"""A client command bound to its options and environment: `podman("pull", ref)` returns stdout."""

APT_PACKAGE = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "podman": "podman",
    "buildah": "buildah",
    "skopeo": "skopeo",
    "containerd": "containerd",
    "ctr": "containerd",
    "/usr/bin/docker-registry": "docker-registry",
}


def require(*binaries: str, root: bool = False) -> None:
    """Skip the test when a client is missing locally; under CI=true a missing client is a failure instead."""
    problems = [f"install {b}: apt-get install {APT_PACKAGE.get(b, b)}" for b in binaries if shutil.which(b) is None]
    if root and os.geteuid() != 0:
        problems.append(f"{', '.join(binaries)} must run as root here (rootful daemon / vfs storage)")
    if not problems:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("; ".join(problems), pytrace=False)
    pytest.skip("; ".join(problems))


def skopeo_copy(*args: str) -> None:
    """`skopeo copy` with no signature policy: how the tests put a layout's images into the registry."""
    run(["skopeo", "--insecure-policy", "copy", *args])


def run(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    check: bool = True,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run a client; on failure the assertion message carries its command line, stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        list(args), env=full_env, capture_output=True, text=text, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(args)} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
