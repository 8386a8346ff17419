"""Private `dockerd` and `containerd` instances for the e2e tests, each in its own short-lived directory.

They use the vfs / native snapshotters (plain directories, no mounts) and no networking setup, so stopping the
process and removing the directory leaves nothing behind. Sockets live under a short /tmp directory because a unix
socket path may not exceed 108 bytes, which deep pytest temp paths can.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from registry_process import die_with_parent


class Daemon:
    """A daemon process in its own session, stopped by its pid (and its session's group) even when a test failed."""

    name = "daemon"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"dr3-{self.name}-"))
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "api.sock"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists() and self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not come up within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM lets dockerd stop the containerd it spawned; anything left in the session group is then killed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Dockerd(Daemon):
    name = "dockerd"

    def __init__(self, insecure_registry: str) -> None:
        super().__init__()
        self.insecure_registry = insecure_registry

    @property
    def env(self) -> dict[str, str]:
        """Client environment: this daemon, a private client config (manifest lists are stored there)."""
        return {
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.dir / "client"),
            "DOCKER_CLI_EXPERIMENTAL": "enabled",
        }

    def command(self) -> list[str]:
        return [
            "dockerd",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'docker.pid'}",
            f"--host=unix://{self.socket}",
            f"--insecure-registry={self.insecure_registry}",
        ]

    def ready(self) -> bool:
        probe = subprocess.run(["docker", "version"], env={**os.environ, **self.env}, capture_output=True, timeout=30)
        return probe.returncode == 0


class Containerd(Daemon):
    name = "containerd"

    @property
    def ctr(self) -> list[str]:
        """The `ctr` command line for this daemon, in a namespace of its own."""
        return ["ctr", "--address", str(self.socket), "--namespace", "e2e"]

    def command(self) -> list[str]:
        config = self.dir / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.dir / "root"}"',
                    f'state = "{self.dir / "state"}"',
                    # Only the native snapshotter: no mounts, and no kernel features needed.
                    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.overlayfs",'
                    ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
                    ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
                    "[grpc]",
                    f'  address = "{self.socket}"',
                    "[ttrpc]",
                    f'  address = "{self.socket}.ttrpc"',
                    "[debug]",
                    '  address = ""',
                    "[metrics]",
                    '  address = ""',
                ]
            )
            + "\n"
        )
        return ["containerd", "--config", str(config)]

    def ready(self) -> bool:
        probe = subprocess.run([*self.ctr, "version"], capture_output=True, timeout=30)
        return probe.returncode == 0

    @property
    def snapshot_root(self) -> Path:
        return self.dir / "root" / "io.containerd.snapshotter.v1.native" / "snapshots"
