"""Start and stop a real registry process for the tests: ours, or CNCF Distribution as a reference.

`REGISTRY_UNDER_TEST=distribution` runs the same black-box tests against Debian's `docker-registry` binary
(CNCF Distribution 2.8), which is how the API tests are checked against the reference implementation.
"""

from __future__ import annotations

import copy
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in a child before exec: if pytest itself is killed, the kernel stops the child too, so no server or
    daemon outlives a killed test run."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

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
        if implementation() == "ours":
            cfg["http"]["workers"] = self.workers
        _merge(cfg, self.extra_config)
        return cfg

    def command(self, config_path: Path) -> list[str]:
        if implementation() == "distribution":
            if not shutil.which(DISTRIBUTION_BINARY):
                raise RuntimeError("CNCF Distribution is not installed: apt-get install docker-registry")
            return [DISTRIBUTION_BINARY, "serve", str(config_path)]
        return [sys.executable, "-m", "docker_registry.server", "serve", str(config_path)]

    def start(self, timeout: float = 60.0) -> RegistryProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(self.config()))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(config_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry did not answer within {timeout}s:\n{self.log_path.read_text()}")

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
