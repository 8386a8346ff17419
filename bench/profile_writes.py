"""Where our small-write path spends its time: `python3 bench/profile_writes.py [--load blobs-patch] [--pyspy DIR]`.

Starts our registry alone (2 workers, filesystem storage in a temp dir, log level warn, no access log; through
`counted_server.py`, which counts transactions, thread hops, /proc reads and renewal tasks without changing the
server) and Distribution beside it, drives one small-write load (the same as `run.py`'s) against each, and prints
per item: server CPU, the counters' differences, and optionally the syscalls `strace -f -c` saw on the server
(fsync, fdatasync, ...) and a `py-spy` profile of every worker (collapsed stacks, summarised: top functions by
inclusive and by own samples). Distribution gets the same load for its CPU per item (and syscalls with --strace).
See PROFILE-small-writes.md for what came out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import images
import servers
import smallwrites
from run import cpu_seconds
from servers import Server
from task_stat import tasks

HERE = Path(__file__).resolve().parent
LOADS = ("blobs-patch", "blobs-put", "mounts", "tags", "skopeo")


def counted_ours(workdir: Path, workers: int) -> Server:
    port = servers.free_port()
    return Server(
        "ours",
        workdir,
        [sys.executable, str(HERE / "counted_server.py")],
        servers.ours_config(workdir / "data", f"127.0.0.1:{port}", workers),
        port,
    )


def workers_of(server: Server) -> list[int]:
    """The processes that serve requests: the workers, or the leader of a registry that serves in one process."""
    assert server.proc is not None
    workers = [pid for pid in server.pids() if servers.role(pid, server.proc.pid) == "worker"]
    return workers or [server.proc.pid]


def counts(server: Server, directory: Path) -> collections.Counter[str]:
    """Every process's counters, summed (SIGUSR1 makes each write its file)."""
    pids = server.pids()
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)
    total: collections.Counter[str] = collections.Counter()
    for pid in pids:
        path = directory / f"counts-{pid}.json"
        if path.exists():
            total.update(json.loads(path.read_text()))
    return total


def skopeo_pushes(server: Server, tag: str, count: int, scratch: Path) -> smallwrites.WriteLoad:
    """`count` skopeo pushes of 10 fresh 20 KB layers each, 12 at a time (the run.py batch figure)."""
    seconds = 0.0
    for start in range(0, count, 12):
        copies = []
        for i in range(start, min(count, start + 12)):
            layout = scratch / f"{server.name}-{tag}-{i}"
            images.build_small_layout(layout, 10, 20_000)
            copies.append((f"oci:{layout}:{images.REF_NAME}", f"docker://127.0.0.1:{server.port}/prof/{tag}-{i}:x"))
        seconds += images.skopeo_copies_seconds(copies)
    shutil.rmtree(scratch, ignore_errors=True)
    return smallwrites.WriteLoad(count, 0, 0, seconds)


def prepare(load: str, server: Server, tag: str, count: int, image: images.SeededImage) -> tuple[Sequence[Any], Any]:
    if load == "blobs-patch":
        return smallwrites.random_blobs(count, 20_000), smallwrites.blob_patch_put(server.url, f"prof/{tag}")
    if load == "blobs-put":
        return smallwrites.random_blobs(count, 20_000), smallwrites.blob_post_put(server.url, f"prof/{tag}")
    if load == "mounts":
        repos = [f"prof/{tag}-{i}" for i in range(count)]
        return repos, smallwrites.mount_and_manifest(server.url, "prof/source", image)
    return [f"{tag}-{i}" for i in range(count)], smallwrites.tag_put(server.url, "prof/source", image)


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], tuple[float, float]]:
    """(user, system) CPU seconds of every thread of `pids`, by (pid, tid)."""
    ticks = os.sysconf("SC_CLK_TCK")
    return {(pid, tid): (int(fields[11]) / ticks, int(fields[12]) / ticks) for pid, tid, fields in tasks(pids)}


def thread_cpu_summary(
    before: dict[tuple[int, int], tuple[float, float]], after: dict[tuple[int, int], tuple[float, float]], items: int
) -> str:
    """Per item: user and system CPU of the workers' event-loop threads (tid == pid) and of their other threads
    (asyncio's default thread pool: database calls, file operations, hashing)."""
    sums = {"event loop": [0.0, 0.0], "thread pool": [0.0, 0.0]}
    for (pid, tid), (user, system) in after.items():
        user0, system0 = before.get((pid, tid), (0.0, 0.0))
        kind = "event loop" if pid == tid else "thread pool"
        sums[kind][0] += user - user0
        sums[kind][1] += system - system0
    return "".join(
        f"  {kind:<12} user {u / items * 1e6:7.0f} µs, system {sy / items * 1e6:7.0f} µs per item\n"
        for kind, (u, sy) in sums.items()
    )


WHOLE_STACK = [
    # (category, substrings of any frame): work done on behalf of something, wherever its leaf is
    ("hashing (Hasher.update)", ["Hasher.update"]),
    ("handing work to threads and back (to_thread, submit, futures, self-pipe)", [
        "to_thread (", "run_in_executor", "ThreadPoolExecutor.submit", "_copy_future_state", "_chain_future",
        "_call_set_state", "wrap_future", "_write_to_self", "_read_from_self",
    ]),
    ("lease renewal tasks (_renewing, _renew)", ["Uploads._renewing", "Uploads._renew "]),
    ("uuid4", ["uuid4 ("]),
    ("BEGIN IMMEDIATE, PRAGMA synchronous, COMMIT calls", [
        "_set_synchronous", "create_engine.<locals>._begin", "do_commit",
    ]),
]  # fmt: skip
LEAF_UP = [
    # (category, file path fragment): the innermost frame of a known component names the sample
    ("SQLAlchemy: statements built, compiled, cache keys", "sqlalchemy/sql/"),
    ("SQLAlchemy: execution, results, sqlite3 calls", "sqlalchemy/engine/"),
    ("SQLAlchemy: connection pool", "sqlalchemy/pool/"),
    ("SQLAlchemy: events, other", "sqlalchemy/"),
    ("our store code (store/*.py)", "server/store/"),
    ("file driver (drivers/file.py)", "drivers/file.py"),
    ("our handlers and registry logic", "server/"),
    ("aiohttp: parsing, routing, responses", "aiohttp/"),
    ("asyncio event loop", "asyncio/"),
    ("asyncio event loop", "selectors.py"),
    ("thread-pool machinery (thread side)", "concurrent/futures/"),
    ("thread-pool machinery (thread side)", "threading.py"),
]


def categorise(paths: list[Path]) -> str:
    """GIL samples by where they went, split by thread (event loop or pool): first the whole-stack categories,
    else the innermost frame of a known component."""
    totals: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            total += int(n)
            frames = stack.split(";")
            side = "pool" if "concurrent/futures/thread.py" in stack else "loop"
            name = "other"
            if "counted_server.py:" in frames[-1]:
                name = "instrumentation (counted_server.py's own frames, not the server's cost)"
            for category, needles in [] if name != "other" else WHOLE_STACK:
                if any(needle in stack for needle in needles):
                    name = category
                    break
            else:
                for frame in reversed(frames):
                    found = next((c for c, fragment in LEAF_UP if fragment in frame), None)
                    if found:
                        name = found
                        break
            totals[f"{side}: {name}"] += int(n)
    if not total:
        return "no samples\n"
    return "".join(f"  {100 * n / total:5.1f}%  {name}\n" for name, n in totals.most_common())


def start_tools(server: Server, args: argparse.Namespace, out: Path, name: str) -> list[subprocess.Popen]:
    tools = []
    pids = workers_of(server) if server.name == "ours" else server.pids()
    if args.strace:
        argv = ["strace", "-f", "-c", "-o", str(out / f"strace-{name}.txt")]
        for pid in pids:
            argv += ["-p", str(pid)]
        tools.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
    if args.pyspy and server.name == "ours":
        for pid in pids:
            argv = ["py-spy", "record", "-p", str(pid), "-r", str(args.rate), "--format", "raw"]
            argv += ["-o", str(out / f"pyspy-{name}-{pid}.txt"), *(["--native"] if args.native else [])]
            argv += ["--gil"] if args.gil else []
            tools.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if tools:
        time.sleep(2)  # attached before the load starts
    return tools


def stop_tools(tools: list[subprocess.Popen]) -> None:
    for tool in tools:
        tool.send_signal(signal.SIGINT)
    for tool in tools:
        try:
            tool.wait(30)
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.wait()


FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")


def frame_name(frame: str) -> str:
    """`function (file.py:line)` -> `function (file.py)`: lines of one function count together."""
    m = FRAME.match(frame)
    if not m:
        return frame
    where = m["where"].rsplit(":", 1)[0]
    return f"{m['func']} ({'/'.join(where.split('/')[-2:])})"


def summarise_profile(paths: list[Path], top: int = 40) -> str:
    """Top functions by inclusive samples (on the stack) and by own samples (the leaf), over all workers."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            frames = [frame_name(f) for f in stack.split(";")]
            total += int(n)
            own[frames[-1]] += int(n)
            for f in set(frames):
                inclusive[f] += int(n)
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "own:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def strace_summary(path: Path, items: int) -> str:
    if not path.exists():
        return ""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[3].isdigit():
            out.append(f"  {parts[-1]:<20} {int(parts[3]) / items:8.2f} per item")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", choices=LOADS, default="blobs-patch")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--connections", type=int, help="default 16 for blobs, 8 for mounts and tags")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strace", action="store_true", help="count the servers' syscalls (slows them down)")
    parser.add_argument("--pyspy", action="store_true", help="sample our workers with py-spy")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil (only samples holding the GIL)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="keep raw profiles and strace files here")
    args = parser.parse_args()
    connections = args.connections or (16 if args.load.startswith("blobs") else 8)

    tmp = Path(tempfile.mkdtemp(prefix="registry-profile-"))
    out = args.out or tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_COUNTS_DIR"] = str(tmp / "counts")
    ours = counted_ours(tmp / "ours", args.workers)
    dist = servers.distribution(tmp / "distribution")
    try:
        for server in (ours, dist):
            server.start()
            image = images.seed_image(server.url, "prof/source", "latest")
            if args.load == "skopeo":
                skopeo_pushes(server, "warm", 12, tmp / "layouts")
            else:
                items, action = prepare(args.load, server, "warm", 100, image)
                smallwrites.run(server.url, items, connections, action)  # warm: connections, caches, thread pool

            before = counts(server, tmp / "counts") if server is ours else collections.Counter()
            tools = start_tools(server, args, out, server.name)
            if args.load != "skopeo":
                items, action = prepare(args.load, server, "load", args.count, image)
            watched = workers_of(server) if server is ours else server.pids()
            threads0 = thread_cpu(watched)
            cpu0 = cpu_seconds(server)
            if args.load == "skopeo":
                load = skopeo_pushes(server, "load", args.count, tmp / "layouts")
            else:
                load = smallwrites.run(server.url, items, connections, action)
            cpu = cpu_seconds(server) - cpu0
            threads = thread_cpu(watched)
            stop_tools(tools)
            print(f"## {server.name}: {args.load}, {load.items} items, {load.requests} requests, {connections} conns")
            print(
                f"{load.items_per_second:.0f} items/s, {load.requests_per_second:.0f} req/s, "
                f"server CPU {cpu:.2f} s = {cpu / max(load.items, 1) * 1e6:.0f} µs per item, "
                f"{cpu / max(load.requests, 1) * 1e6:.0f} µs per request; failures {load.failures} {load.first_error}"
            )
            print("CPU by thread:")
            print(thread_cpu_summary(threads0, threads, max(load.items, 1)), end="")
            if server is ours:
                diff = counts(server, tmp / "counts") - before
                print("counters per item:")
                for key in sorted(diff):
                    print(f"  {key:<60} {diff[key] / max(load.items, 1):8.3f}")
            if args.strace:
                print(f"syscalls per item ({server.name}):")
                print(strace_summary(out / f"strace-{server.name}.txt", max(load.items, 1)), end="")
            if args.pyspy and server is ours:
                print("py-spy profile of the workers:")
                profiles = sorted(out.glob(f"pyspy-{server.name}-*.txt"))
                print(summarise_profile(profiles), end="")
                print("samples by category:")
                print(categorise(profiles), end="")
            print(flush=True)
    finally:
        for server in (ours, dist):
            server.stop()
            if server.log_path.exists():
                shutil.copy(server.log_path, out / f"server-{server.name}.log")
        shutil.rmtree(tmp, ignore_errors=True)  # with it the profiles, unless --out put them elsewhere
    return 0


if __name__ == "__main__":
    sys.exit(main())
