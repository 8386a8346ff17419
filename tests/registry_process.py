"""Start and stop a real registry process for the tests: ours, or CNCF Distribution as a reference.

`REGISTRY_UNDER_TEST=distribution` runs the same black-box tests against Debian's `docker-registry` binary
(CNCF Distribution 2.8), which is how the API tests are checked against the reference implementation;
`STORAGE_UNDER_TEST=s3` runs them on our S3 driver, each registry on its own bucket of a moto server.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from s3_server import shared_server, storage_under_test
from server_launch import DISTRIBUTION_BINARY, launch
from server_launch import die_with_parent as die_with_parent  # re-exported for the tests that start daemons
from server_launch import free_port as free_port


def implementation() -> str:
    return os.environ.get("REGISTRY_UNDER_TEST", "ours")


@dataclass
class RegistryProcess:
    """One registry server on 127.0.0.1 with its own data directory and YAML config."""

    workdir: Path
    delete_enabled: bool = True
    workers: int = 2
    extra_config: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the server process (e.g. REGISTRY_* overrides)."""
    storage: dict[str, Any] | None = None
    """The whole `storage` section (another driver, its options), instead of a filesystem under `data_dir` with
    `delete_enabled`; `extra_config` is still merged over it."""
    kind: str = field(default_factory=implementation)
    """"ours", or "distribution" for CNCF Distribution (default: `REGISTRY_UNDER_TEST`); tests that need the
    reference itself (say, to write a Distribution storage tree) ask for it here."""
    tls: bool = False
    """Set when `extra_config` gives `http.tls`: the URL is then https."""
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def __post_init__(self) -> None:
        if self.storage is None and self.kind == "ours" and storage_under_test() == "s3":
            # The API tests on the S3 driver: a fresh bucket on the session's moto server. Redirects are off, as
            # the tests read blob bodies from the registry; tests/s3 checks the redirects to S3.
            moto = shared_server()
            self.storage = {
                "s3": moto.options(moto.bucket(), rootdirectory="registry"),
                "delete": {"enabled": self.delete_enabled},
                "redirect": {"disable": True},
            }

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": copy.deepcopy(self.storage)
            if self.storage is not None
            else {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": self.delete_enabled},
            },
            "http": {"addr": self.host},
        }
        if self.kind == "ours":
            cfg["http"]["workers"] = self.workers
        _merge(cfg, self.extra_config)
        return cfg

    def command(self, config_path: Path) -> list[str]:
        if self.kind == "distribution":
            if not shutil.which(DISTRIBUTION_BINARY):
                raise RuntimeError("CNCF Distribution is not installed: apt-get install docker-registry")
            return [DISTRIBUTION_BINARY, "serve", str(config_path)]
        return [sys.executable, "-m", "docker_registry.server", "serve", str(config_path)]

    def start(self, timeout: float = 60.0) -> RegistryProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(self.config()))
        name = "CNCF Distribution" if self.kind == "distribution" else "registry"
        self.proc = launch(
            name,
            self.command(config_path),
            self.workdir,
            self.log_path,
            f"{self.url}/v2/",
            timeout,
            env={**os.environ, **self.env},
        )
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None

    def restart(self) -> RegistryProcess:
        self.stop()
        return self.start()


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
