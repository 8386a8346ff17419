"""Instructions per pulled GET in the workers (issue 13), counted by callgrind: the method of `bench/README.md`,
notifications, events7 and events8, as a script.

    python3 bench/notify_callgrind.py [--base DIR] [--servers off,on,base] [--requests 4000] [--rounds 1]
        [--flush-seconds S] [--keep]

Each server (2 workers) runs under `valgrind --tool=callgrind --separate-threads=yes`, one after another: seeded
with one small image, warmed up, then per round its counters are zeroed and dumped (`SITE`) around an idle spell
and around `--requests` manifest GETs from `hey -c 16` (the dump waits for the receiver to get every event).
Printed per server: the instructions executed by the workers' main threads per GET, less what they execute idle
in as long (their timers and polls; a loaded machine stretches a load). "off" has no endpoint and no metrics,
"on" both, "base" is "on" from the source tree `DIR` (its `src/` and `core/src/`, as for `ab_notifications.py`).
Under valgrind a worker serves some 100 GETs a second, so a pull flush (every 100 ms) carries a few notes, not the
benchmark's ~1,000: its fixed cost weighs some 50 times what it does there, unless `--flush-seconds 10` lets it
carry as many. The workers' other threads (the outbox writer, readers) are printed apart, per GET, and the
delivery process (all its threads) per event.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import images
import loadgen
import servers
from notifications import CountingReceiver, log, metrics_on, settle
from servers import Server

IDLE_SECONDS = 10.0
CONCURRENCY = 16
MANIFEST = "/v2/bench/small/manifests/latest"
TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


CONTROL_C = """#include <valgrind/callgrind.h>
void zero(void) { CALLGRIND_ZERO_STATS; }
void dump(void) { CALLGRIND_DUMP_STATS; }
"""
SITE = """import ctypes, os, signal
_lib = ctypes.CDLL(os.environ["BENCH_CALLGRIND_CONTROL"])
signal.signal(signal.SIGUSR1, lambda *_: _lib.zero())
signal.signal(signal.SIGUSR2, lambda *_: _lib.dump())
if os.environ.get("BENCH_FLUSH_SECONDS"):
    from docker_registry.server.notifications import recorder
    recorder.FLUSH_SECONDS = float(os.environ["BENCH_FLUSH_SECONDS"])
"""
"""The `sitecustomize` on the server's `PYTHONPATH`: `callgrind_control` does not reach forked children (they have
no vgdb pipe), so each process zeroes (SIGUSR1) and dumps (SIGUSR2) its own counters by a client request, from a
handler its main thread runs; forked workers inherit the handlers."""


def _zero(pid: int) -> None:
    os.kill(pid, signal.SIGUSR1)


def _thread_instructions(folder: Path, pid: int) -> tuple[int, int]:
    """The instructions of `pid`'s main thread and of its other threads together (the outbox writer, readers) in
    its latest dump (`callgrind.out.PID.N-TT`, one file per thread)."""
    dumps = list(folder.glob(f"callgrind.out.{pid}.*-*"))
    assert dumps, (pid, sorted(p.name for p in folder.iterdir()))
    latest = max(int(p.name.split(".")[-1].split("-")[0]) for p in dumps)
    main = others = 0
    for dump in dumps:
        number, thread = dump.name.split(".")[-1].split("-")
        if int(number) != latest:
            continue
        match = TOTALS.search(dump.read_text(errors="replace"))
        assert match is not None, dump
        if int(thread) == 1:
            main = int(match.group(1))
        else:
            others += int(match.group(1))
    return main, others


def _dump(folder: Path, pids: list[int]) -> dict[int, tuple[int, int]]:
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    time.sleep(3)
    return {pid: _thread_instructions(folder, pid) for pid in pids}


def _ok(hey_output: str) -> int:
    match = re.search(r"\[200\]\s+(\d+) responses", hey_output)
    return int(match.group(1)) if match else 0


def _delivered(receiver: CountingReceiver, expected: int, timeout: float = 300) -> None:
    """Wait until the receiver has `expected` events (every note flushed and delivered), then a second more."""
    deadline = time.monotonic() + timeout
    while receiver.events < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    settle(receiver, timeout)


def measure(server: Server, receiver: CountingReceiver, requests: int, rounds: int) -> list[str]:
    assert server.proc is not None
    folder = server.workdir / "callgrind"
    images.seed_small_image(server.url, "bench/small", "latest")
    hey = loadgen.require("hey", "hey")
    out = subprocess.run(
        [hey, "-n", "500", "-c", str(CONCURRENCY), server.url + MANIFEST], check=True, capture_output=True, text=True
    ).stdout
    notifies = server.config is not None and "notifications" in server.config
    expected = receiver.events + (_ok(out) if notifies else 0)
    _delivered(receiver, expected)
    children = _children(server.proc.pid)
    delivery = [pid for pid in children if os.getpriority(os.PRIO_PROCESS, pid) > 0]
    workers = [pid for pid in children if pid not in delivery]
    lines = []
    for r in range(rounds):
        everyone = workers + delivery
        for pid in everyone:
            _zero(pid)
        started = time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = _dump(folder, everyone)
        idle_seconds = time.monotonic() - started
        before = receiver.events
        for pid in everyone:
            _zero(pid)
        started = time.monotonic()
        out = subprocess.run(
            [hey, "-n", str(requests), "-c", str(CONCURRENCY), server.url + MANIFEST],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        ok = _ok(out)
        expected += ok if notifies else 0
        _delivered(receiver, expected)
        loaded = _dump(folder, everyone)
        seconds = time.monotonic() - started
        events = receiver.events - before
        scale = seconds / idle_seconds
        worker_total = sum(loaded[pid][0] - idle[pid][0] * scale for pid in workers)
        threads_total = sum(loaded[pid][1] - idle[pid][1] * scale for pid in workers)
        raw = sum(loaded[pid][0] for pid in workers)
        line = (
            f"{server.name} round {r + 1}: {ok} GETs in {seconds:.0f} s, {events} events; workers' main threads "
            f"{worker_total / ok / 1000:,.1f}k instructions per GET less idle ({raw / ok / 1000:,.1f}k raw, idle "
            f"{sum(idle[p][0] for p in workers) / idle_seconds / 1000:,.0f}k/s); their other threads "
            f"{threads_total / ok / 1000:,.1f}k per GET less idle"
        )
        if delivery and events:
            per_event = sum(sum(loaded[p]) - sum(idle[p]) * scale for p in delivery) / events
            line += f"; delivery {per_event / 1000:,.1f}k per event less idle"
        log(line)
        lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a source tree holding src/ and core/src/ (for `base`)")
    parser.add_argument("--servers", default="off,on", help="comma-separated: off, on, base, metrics, notifications")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the dumps, for callgrind_annotate")
    parser.add_argument(
        "--flush-seconds",
        type=float,
        help="the pull flusher's period in the workers (default 0.1 s): longer, a flush carries about as many notes as "
        "in the benchmark (up to 1,000) instead of a few",
    )
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is needed: apt-get install valgrind", file=sys.stderr)
        return 2
    receiver = CountingReceiver().start()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-callgrind-"))
    endpoint = {"name": "bench", "url": receiver.url, "batch": 100}
    report = []
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    (tmp / "control.c").write_text(CONTROL_C)
    control = tmp / "control.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(control), str(tmp / "control.c")], check=True)
    try:
        for name in args.servers.split(","):
            server = servers.ours(tmp / name, 2)
            server.name = name
            assert server.config is not None
            if name in ("on", "base", "metrics"):
                metrics_on(server)
            if name in ("on", "base", "notifications"):
                server.config["notifications"] = {"endpoints": [{**endpoint}]}
            folder = server.workdir / "callgrind"
            folder.mkdir(parents=True)
            valgrind = [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={folder}/callgrind.out.%p",
            ]
            path = str(site)
            if name == "base":
                assert args.base is not None, "--base DIR is needed for `base`"
                path += f":{args.base.resolve() / 'src'}:{args.base.resolve() / 'core' / 'src'}"
            environment = [f"PYTHONPATH={path}", f"BENCH_CALLGRIND_CONTROL={control}"]
            if args.flush_seconds is not None:
                environment.append(f"BENCH_FLUSH_SECONDS={args.flush_seconds}")
            server.command = ["env", *environment, *valgrind, *server.command]
            log(f"starting {name} under callgrind")
            server.start(timeout=600)
            try:
                report += measure(server, receiver, args.requests, args.rounds)
            finally:
                server.stop(timeout=60)
    finally:
        receiver.stop()
        if args.keep:
            log(f"dumps kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
