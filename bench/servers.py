"""The servers under test: each in its own process group, temp dir and loopback port, so it can be measured and
stopped as a whole (our registry forks workers; Distribution is one process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tests_path  # noqa: F401 - makes server_launch importable
import yaml
from postgres_cluster import PostgresCluster
from proc_stat import processes

from server_launch import DISTRIBUTION_BINARY, free_port, launch, log_tail

STATIC_SERVER = Path(__file__).with_name("static_server.py")
SENDFILE_SERVER = Path(__file__).with_name("sendfile_server.py")


def ours_config(root: Path, addr: str, workers: int) -> dict[str, Any]:
    """Our registry with the same storage as Distribution's, quiet logs (an access log costs both sides CPU)."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": addr, "workers": workers},
    }


def distribution_config(root: Path, addr: str) -> dict[str, Any]:
    """Distribution as its own docs recommend running it: in-memory blob descriptor cache, no access log."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": addr},
    }


@dataclass
class Server:
    """One server process group; `name` is how the report calls it."""

    name: str
    workdir: Path
    command: list[str]
    config: dict[str, Any] | None = None
    port: int = field(default_factory=free_port)
    ready_path: str = "/v2/"
    proc: subprocess.Popen | None = None
    companion_cpu: Callable[[], float] | None = None
    """CPU seconds used so far by processes outside the group that do the server's work (its PostgreSQL cluster):
    the server's too, as an SQLite database's is inside the workers."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout: float = 60.0) -> Server:
        # Both registries get an existing, empty storage root: the benchmark measures serving, not first start.
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        args = list(self.command)
        if self.config is not None:
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(self.config))
            args.append(str(config_path))
        self.proc = launch(self.name, args, self.workdir, self.log_path, self.url + self.ready_path, timeout)
        return self

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def pids(self) -> list[int]:
        """Every live process of the server's process group (the leader and any workers it forked)."""
        if self.proc is None:
            return []
        return processes_in_group(self.proc.pid)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
            deadline = time.monotonic() + timeout
            while processes_in_group(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not processes_in_group(pgid):
                break
        self.proc = None


def ours(workdir: Path, workers: int, database: PostgresCluster | None = None) -> Server:
    """Our registry on SQLite beside its data, or on a new database of `database`, whose processes' CPU then
    counts as the server's (`Server.companion_cpu`)."""
    port = free_port()
    config = ours_config(workdir / "data", f"127.0.0.1:{port}", workers)
    if database is not None:
        config["database"] = {"url": database.new_database()}
    server = Server("ours", workdir, [sys.executable, "-m", "docker_registry.server", "serve"], config, port)
    if database is not None:
        server.companion_cpu = database.cpu_seconds
    return server


def with_metrics(server: Server, name: str) -> Server:
    """A second server like `server` (its own data and port) with Prometheus metrics on, served on a debug
    listener: `http.debug.addr` and `http.debug.prometheus` are the same keys for both registries."""
    port = free_port()
    workdir = server.workdir.with_name(server.workdir.name + "-metrics")
    config = yaml.safe_load(yaml.safe_dump(server.config))
    config["storage"]["filesystem"]["rootdirectory"] = str(workdir / "data")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"] = {"addr": f"127.0.0.1:{free_port()}", "prometheus": {"enabled": True}}
    return Server(name, workdir, server.command, config, port)


def distribution(workdir: Path, name: str = "distribution") -> Server:
    if not shutil.which(DISTRIBUTION_BINARY):
        raise RuntimeError("CNCF Distribution is not installed: apt-get install docker-registry")
    port = free_port()
    config = distribution_config(workdir / "data", f"127.0.0.1:{port}")
    return Server(name, workdir, [DISTRIBUTION_BINARY, "serve"], config, port)


def static_file(workdir: Path, blob: Path) -> Server:
    """A bare sendfile server for one file: what the download client reaches with no registry logic at all."""
    return _file_server("static", STATIC_SERVER, workdir, blob)


def sendfile_file(workdir: Path, blob: Path) -> Server:
    """The barest server for one file (blocking sendfile, no event loop): the kernel's ceiling for a blob GET."""
    return _file_server("sendfile", SENDFILE_SERVER, workdir, blob)


def _file_server(name: str, script: Path, workdir: Path, blob: Path) -> Server:
    port = free_port()
    return Server(name, workdir, [sys.executable, str(script), str(port), str(blob)], port=port, ready_path="/health")


def processes_in_group(pgid: int) -> list[int]:
    return [pid for pid, fields in processes() if int(fields[2]) == pgid and fields[0] != "Z"]


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM: the most resident memory the process ever had, so sampling now and then still sees every peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def role(pid: int, leader: int) -> str:
    """ "worker" for a process that serves requests; the leader of a forking server only supervises, and
    multiprocessing's resource tracker is a helper. A single-process server's leader is its worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "gone"
    if b"resource_tracker" in cmdline:
        return "helper"
    return "leader" if pid == leader else "worker"


class RssWatch:
    """Keeps the highest VmHWM seen for every process of the watched servers, including workers that exit early."""

    def __init__(self, servers: list[Server], interval: float = 0.5) -> None:
        self.servers = servers
        self.interval = interval
        self.peaks: dict[str, dict[int, int]] = {s.name: {} for s in servers}
        self.roles: dict[str, dict[int, str]] = {s.name: {} for s in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for server in self.servers:
                if server.proc is None:
                    continue
                peaks, roles = self.peaks[server.name], self.roles[server.name]
                for pid in server.pids():
                    kib = peak_rss_kib(pid)
                    if kib is None:
                        continue
                    if pid not in roles:
                        roles[pid] = role(pid, server.proc.pid)
                    peaks[pid] = max(kib, peaks.get(pid, 0))

    def summary(self, name: str) -> RssSummary:
        with self._lock:
            peaks, roles = dict(self.peaks[name]), dict(self.roles[name])
        workers = [kib for pid, kib in peaks.items() if roles[pid] == "worker"]
        if not workers:  # One process that both supervises and serves.
            workers = [kib for pid, kib in peaks.items() if roles[pid] == "leader"]
        return RssSummary(
            max(workers, default=0) / 1024, sum(peaks.values()) / 1024, len(workers), len(peaks) - len(workers)
        )


@dataclass
class RssSummary:
    largest_worker_mb: float
    total_mb: float
    workers: int
    others: int

    def __str__(self) -> str:
        return (
            f"{self.largest_worker_mb:.0f} MB largest of {self.workers} worker(s), "
            f"{self.total_mb:.0f} MB over all {self.workers + self.others} processes"
        )
