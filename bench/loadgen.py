"""Small-request load: `wrk` for GET (the most efficient generator here), `hey` for HEAD (stock wrk waits for
the body a HEAD response announces and hangs), with their reports parsed into numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MANIFEST_ACCEPT = (
    "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
PIPELINE_SCRIPT = Path(__file__).with_name("wrk_pipeline.lua")


@dataclass
class LoadResult:
    rps: float
    p99_ms: float
    requests: int
    failures: int
    """Non-2xx answers and socket errors (connect, read, write, 30 s timeouts): a run with failures measures the
    wrong thing."""


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise RuntimeError(f"{tool} is not installed: apt-get install {package}")
    return path


def wrk_get(
    url: str,
    connections: int,
    seconds: int,
    header: str,
    *more_headers: str,
    threads: int = 2,
    cpus: str | None = None,
    pipeline: int = 1,
) -> LoadResult:
    """`threads` wrk threads; `cpus` (taskset's list, "1" or "0,1") pins them to those CPUs; `pipeline` requests
    sent at a time on each connection (`wrk_pipeline.lua`)."""
    argv = [require("wrk", "wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    if cpus is not None:
        argv = [require("taskset", "util-linux"), "-c", cpus, *argv]
    for value in (header, *more_headers):
        argv += ["-H", value]
    if pipeline > 1:
        argv += ["-s", str(PIPELINE_SCRIPT)]
    out = _run([*argv, url, *(["--", str(pipeline)] if pipeline > 1 else [])], seconds)
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not p99:
        raise RuntimeError(f"wrk printed no 99% latency:\n{out}")
    requests = int(_find(r"(\d+) requests in", out))
    failures = int(_find(r"Non-2xx or 3xx responses: (\d+)", out, "0"))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failures += sum(int(g) for g in errors.groups())
    return LoadResult(rps, float(p99.group(1)) * _UNITS[p99.group(2)], requests, failures)


def hey(url: str, connections: int, seconds: int, method: str = "HEAD") -> LoadResult:
    out = _run([require("hey", "hey"), "-c", str(connections), "-z", f"{seconds}s", "-m", method, url], seconds)
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p99 = float(_find(r"99%+ in ([\d.]+) secs", out)) * 1000
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+[A-Z]", out, re.M))
    failures = sum(n for code, n in statuses.items() if not 200 <= code < 300) + errors
    return LoadResult(rps, p99, sum(statuses.values()), failures)


def _run(argv: list[str], seconds: int) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _find(pattern: str, text: str, default: str | None = None) -> str:
    m = re.search(pattern, text)
    if m:
        return m.group(1)
    if default is not None:
        return default
    raise RuntimeError(f"no match for {pattern!r} in:\n{text}")
