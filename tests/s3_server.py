"""A real S3 server for the tests and the benchmark: moto in server mode, its own process on a loopback port.

`STORAGE_UNDER_TEST=s3` makes every `RegistryProcess` that is not given a storage section store its blobs
in a fresh bucket of one moto server shared by the test session, so the API tests run unchanged on the S3 driver.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server_launch import free_port, launch

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials
REGION = "us-east-1"


def storage_under_test() -> str:
    return os.environ.get("STORAGE_UNDER_TEST", "filesystem")


def moto_command(port: int) -> list[str]:
    """`moto_server` from the same environment as the tests (`pip install "moto[server]"`)."""
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if binary is None:
        raise RuntimeError('moto is not installed: pip install "moto[server]"')
    return [binary, "-H", "127.0.0.1", "-p", str(port)]


@dataclass
class MotoServer:
    """moto's S3 on 127.0.0.1; `bucket()` makes an empty bucket and returns its name."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = launch(
            "moto S3 server",
            moto_command(self.port),
            self.workdir,
            self.workdir / "moto.log",
            f"{self.endpoint}/moto-api/",
            60,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def bucket(self) -> str:
        """A new empty bucket (a plain PUT: moto does not check signatures)."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with opener.open(request, timeout=30) as response:
            assert response.status == 200, response.status
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys in `bucket` under `prefix` (one ListObjectsV2 page of up to 1000: tests store a few)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        query = urllib.parse.urlencode({"list-type": "2", "prefix": prefix})
        with opener.open(f"{self.endpoint}/{bucket}?{query}", timeout=30) as response:
            listing = response.read().decode()
        return re.findall(r"<Key>([^<]*)</Key>", listing)

    def options(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The driver's options (`storage.s3`) for `bucket` on this server."""
        return {
            "bucket": bucket,
            "region": REGION,
            "regionendpoint": self.endpoint,
            "accesskey": ACCESS_KEY,
            "secretkey": SECRET_KEY,
            "forcepathstyle": True,
            "secure": False,
            **extra,
        }


_shared: MotoServer | None = None


def shared_server() -> MotoServer:
    """One moto server per test process, started on first use and stopped when the process exits."""
    global _shared
    if _shared is None:
        workdir = Path(tempfile.mkdtemp(prefix="moto-"))
        _shared = MotoServer(workdir).start()
        atexit.register(shutil.rmtree, workdir, True)  # runs after stop: atexit calls in reverse order
        atexit.register(_shared.stop)
    return _shared


def on_filesystem_only(reason: str) -> pytest.MarkDecorator:
    """For a test that reads or changes the registry's storage directory on disk: skipped when the API tests run
    on S3 (`STORAGE_UNDER_TEST=s3`), which has no such directory."""
    return pytest.mark.skipif(storage_under_test() != "filesystem", reason=f"on the filesystem driver only: {reason}")
