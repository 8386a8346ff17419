"""Where a pulled GET's extra CPU goes, whole servers (issue 13): `python3 bench/notify_attribution.py [--servers
off,metrics,notifications,on] [--base DIR] [--rounds N] [--seconds S]`.

Registries side by side, in an order that rotates each round: "off" (no endpoint, no metrics), "metrics" (metrics only),
"notifications" (an endpoint only), "on" (both), "paused" (both, the delivery process stopped with SIGSTOP during each
load and continued after it: what delivery running beside the load costs the rate), and "base" (both, from the source
tree `DIR`, as for `ab_notifications.py`); a name followed by ", nice N" (e.g. "on, nice 19", given as `--servers
"off;on, nice 19"`) sets `notifications.delivery.nice`, one followed by ", idle" puts the delivery process under
SCHED_IDLE, one followed by ", batch N" sends envelopes of up to N events (100 otherwise). Each round puts the same
manifest GET load on each (every GET is a pull event where an endpoint is set). Per server, medians over the rounds of
the CPU per GET during the load of the processes at the workers' priority (not the niced delivery process), split by
kind (user, system) and by thread (the workers' main threads; their other threads: the outbox writer, readers; the
master), read from `/proc/<pid>/task/<tid>/stat`; and, apart, the delivery process's CPU per GET until the receiver has
every event. The rate is printed too, but on this shared machine the CPU figures are the ones to read.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import images
import loadgen
import servers
from notifications import CountingReceiver, log, metrics_on, settle
from servers import Server
from task_stat import tasks

KINDS = ("main user", "main sys", "threads user", "threads sys", "master", "delivery")


def thread_ticks(server: Server) -> dict[str, int]:
    """Clock ticks so far of the server's processes by `KINDS` (the master is the group leader)."""
    assert server.proc is not None
    leader, nice = server.proc.pid, os.getpriority(os.PRIO_PROCESS, server.proc.pid)
    ticks = dict.fromkeys(KINDS, 0)
    for pid, tid, fields in tasks(server.pids()):
        user, system = int(fields[11]), int(fields[12])
        if pid == leader:
            ticks["master"] += user + system
        elif int(fields[16]) > nice:  # field 19 of stat(5): the niced delivery process
            ticks["delivery"] += user + system
        elif tid == pid:
            ticks["main user"] += user
            ticks["main sys"] += system
        else:
            ticks["threads user"] += user
            ticks["threads sys"] += system
    return ticks


def delivery_pids(server: Server) -> list[int]:
    """The server's niced processes (the delivery process)."""
    assert server.proc is not None
    nice = os.getpriority(os.PRIO_PROCESS, server.proc.pid)
    return [pid for pid in server.pids() if os.getpriority(os.PRIO_PROCESS, pid) > nice]


def idle_delivery(server: Server) -> None:
    """Put the delivery process of an "X, idle" server under SCHED_IDLE (it runs only on CPU nothing else wants)."""
    for pid in delivery_pids(server):
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


def build(name: str, tmp: Path, workers: int, endpoint: dict[str, object], base: Path | None) -> Server:
    server = servers.ours(tmp / name, workers)
    server.name = name
    assert server.config is not None
    kind = name.split(",")[0]
    if kind in ("metrics", "on", "paused", "base"):
        metrics_on(server)
    if kind in ("notifications", "on", "paused", "base"):
        batch = re.search(r", batch (\d+)", name)  # e.g. "on, batch 1000": envelopes of up to 1,000 events
        server.config["notifications"] = {"endpoints": [{**endpoint, "batch": int(batch[1])} if batch else endpoint]}
    if name.endswith(", idle"):  # the delivery process under SCHED_IDLE, set once started (`idle_delivery`)
        pass
    elif ", nice" in name:  # e.g. "on, nice 19": the delivery process at that niceness
        assert "notifications" in server.config, name
        server.config["notifications"]["delivery"] = {"nice": int(name.split(", nice ")[1].split(",")[0])}
    if name.startswith("base"):
        assert base is not None, "--base DIR is needed for `base`"
        path = f"{base.resolve() / 'src'}:{base.resolve() / 'core' / 'src'}"
        server.command = ["env", f"PYTHONPATH={path}", *server.command]
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="off,metrics,notifications,on")
    parser.add_argument("--base", type=Path, help="a source tree holding src/ and core/src/ (for `base`)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    receiver = CountingReceiver().start()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-attribution-"))
    endpoint = {"name": "bench", "url": receiver.url, "batch": 100}
    names = args.servers.split(";" if ";" in args.servers else ",")
    group = [build(name, tmp, args.workers, endpoint, args.base) for name in names]
    figures: dict[str, dict[str, list[float]]] = {}
    url = "/v2/bench/small/manifests/latest"
    failures = 0
    try:
        for server in group:
            server.start()
            if server.name.endswith(", idle"):
                time.sleep(2)  # the delivery process started
                idle_delivery(server)
            images.seed_small_image(server.url, "bench/small", "latest")
            loadgen.wrk_get(server.url + url, args.connections, 2, loadgen.MANIFEST_ACCEPT)
        settle(receiver)
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}, load {os.getloadavg()[0]:.1f}")
            for server in group[r % len(group) :] + group[: r % len(group)]:
                paused = delivery_pids(server) if server.name == "paused" else []
                for pid in paused:
                    os.kill(pid, signal.SIGSTOP)
                before = thread_ticks(server)
                get = loadgen.wrk_get(server.url + url, args.connections, args.seconds, loadgen.MANIFEST_ACCEPT)
                during = thread_ticks(server)
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
                settle(receiver)
                after = thread_ticks(server)
                failures += get.failures
                row = figures.setdefault(server.name, {})
                row.setdefault("req/s", []).append(get.rps)
                scale = 1e6 / ticks_per_second / max(get.requests, 1)
                for kind in KINDS:
                    end = after if kind == "delivery" else during
                    row.setdefault(kind, []).append((end[kind] - before[kind]) * scale)
                workers = sum((during[k] - before[k]) for k in KINDS[:5]) * scale
                row.setdefault("workers' priority", []).append(workers)
    finally:
        for server in group:
            server.stop()
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    columns = ["req/s", "workers' priority", *KINDS]
    print(f"| server, medians (ranges) of {args.rounds} rounds, µs per GET | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for server in group:
        row = figures.get(server.name, {})
        cells = []
        for column in columns:
            values = row.get(column, [0.0])
            digits = 0 if column == "req/s" else 1
            low, high = min(values), max(values)
            cells.append(f"{statistics.median(values):,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})")
        print(f"| {server.name} | " + " | ".join(cells) + " |")
    if failures:
        print(f"FAILED: {failures} failed requests")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
