"""Starting a server process on loopback and waiting until it answers: shared by the tests' registries and the
benchmark's servers, so both start, time out and report a failed start the same way."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
"""CNCF Distribution as Debian installs it (`apt-get install docker-registry`)."""
PR_SET_PDEATHSIG = 1
LOG_TAIL = 8000

_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE
_LOOPBACK = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_UNVERIFIED)
)
"""Readiness probes go straight to 127.0.0.1, whatever proxy the environment names; over TLS they only ask whether
the server answers (the tests check certificates themselves)."""


def die_with_parent() -> None:
    """Runs in a child before exec: if pytest itself is killed, the kernel stops the child too, so no server or
    daemon outlives a killed test run."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """A registry that is up answers `/v2/` with 200, or 401 when it wants credentials."""
    try:
        with _LOOPBACK.open(url, timeout=1) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401
    except OSError:
        return False


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return ""


def launch(
    name: str,
    command: Sequence[str],
    cwd: Path,
    log_path: Path,
    ready_url: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start `command` in a session of its own (its workers can be signalled as one group), bound to our life,
    output appended to `log_path`; return once `ready_url` answers. A server that exits or stays silent is killed
    and reported with the end of its log."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env=None if env is None else dict(env),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_tail(log_path)}")
        if answers(ready_url):
            return proc
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise RuntimeError(f"{name} did not answer within {timeout}s:\n{log_tail(log_path)}")
