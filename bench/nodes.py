"""Manifest GET by tag on several nodes: `python3 bench/nodes.py [--seconds N] [--rounds N] [--connections N]
[--storage s3] [--pin] [--pipeline N]`.

Three set-ups, each started, seeded with a 1-layer image tagged `latest`, loaded with `wrk` (`--connections` per
node) and stopped, in interleaved rounds:

- `sqlite, 1 node`: the single-box registry (the SQLite change signal keeps its caches).
- `postgres, 1 node`: the same node on PostgreSQL (its caches kept by LISTEN/NOTIFY, `store/notify.py`).
- `postgres, 2 nodes`: two such nodes on one storage directory and one database, each loaded by its own `wrk` at
  the same time; the figure is the sum.

Each node runs `--workers` worker processes (default 1, so two nodes have the cores one node of two workers would).
`--storage s3` puts the nodes' blobs in one bucket of a moto server (manifest GETs by tag are served from the
nodes' caches either way). `--pin` gives each node a CPU of its own (`taskset`: node i on CPU i) and pins the `wrk`
loading node i on the next CPU, one wrk thread each (`--wrk-threads`): one node then has a whole core and its
load generator the other, and with two nodes each core runs one node and the other node's load generator.
`--pipeline N` makes each wrk connection send N requests at a time (`wrk_pipeline.lua`), which cuts wrk's CPU per
request (its system calls) so that it takes less from the nodes on a machine without a core to spare for it.

Reported per set-up (median over rounds): requests per second, the nodes' CPU per request (user+system of every
process of every node, from /proc) and the cores they used (CPU seconds over wall seconds), the load generators'
CPU per request and cores, and PostgreSQL's CPU per request (every process of the private cluster). On a machine
with a core per node plus the load generators' and PostgreSQL's, two nodes serve 2x one node's requests if a node
costs the same CPU per request in both set-ups: the projection printed at the end is 2 x (one node's CPU per
request / a node's CPU per request with two nodes). What this machine can show directly is bounded by the cores
the load generators take from the nodes: also printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import loadgen
import servers
import tests_path  # noqa: F401 - postgres_cluster, registry_api
from postgres_cluster import PostgresCluster

from registry_api import image_manifest, push
from s3_server import MotoServer

TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


@dataclass
class Figure:
    rps: float
    node_cpu_us: float
    """Microseconds of node CPU per request."""
    database_cpu_us: float
    failures: int
    node_cores: float
    """Node CPU seconds per wall second: what the nodes got of the machine."""
    wrk_cpu_us: float
    wrk_cores: float


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def children_cpu_seconds() -> float:
    """CPU of this process's finished children: the `wrk` runs, once waited for (the nodes are still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Setup:
    count: int
    database: bool
    storage: dict[str, object] | None
    """A `storage` section for every node (one S3 bucket), or None for one shared filesystem directory."""
    pin: bool
    workers: int


def start_nodes(workdir: Path, setup: Setup, database_url: str | None) -> list[servers.Server]:
    nodes = []
    for i in range(setup.count):
        node = servers.ours(workdir / f"node{i}", setup.workers)
        assert node.config is not None
        if setup.storage is not None:
            node.config["storage"] = setup.storage
        else:
            node.config["storage"]["filesystem"]["rootdirectory"] = str(workdir / "shared")
        if database_url is not None:
            node.config["database"] = {"url": database_url}
        if setup.pin:
            node.command = ["taskset", "-c", str(i % CPUS), *node.command]
        nodes.append(node.start())
    return nodes


def measure(
    nodes: list[servers.Server],
    cluster: PostgresCluster | None,
    seconds: int,
    connections: int,
    pin: bool,
    wrk_threads: int,
    pipeline: int,
) -> Figure:
    with httpx.Client(base_url=nodes[0].url, timeout=30) as client:
        manifest = image_manifest(client, "bench/nodes")
        push(client, "bench/nodes", manifest, "latest")
    for node in nodes:  # warm every worker's caches and connections
        loadgen.wrk_get(f"{node.url}/v2/bench/nodes/manifests/latest", connections, 1, loadgen.MANIFEST_ACCEPT)
    node_pids = [pid for node in nodes for pid in node.pids()]
    database_cpu = cluster.cpu_seconds() if cluster is not None else 0.0
    node_cpu, wrk_cpu = cpu_seconds(node_pids), children_cpu_seconds()
    results: list[loadgen.LoadResult] = []
    lock = threading.Lock()

    def load(i: int, node: servers.Server) -> None:
        url = f"{node.url}/v2/bench/nodes/manifests/latest"
        cpus = str((i + 1) % CPUS) if pin else None  # node i runs on CPU i: its load comes from the next one
        result = loadgen.wrk_get(
            url, connections, seconds, loadgen.MANIFEST_ACCEPT, threads=wrk_threads, cpus=cpus, pipeline=pipeline
        )
        with lock:
            results.append(result)

    threads = [threading.Thread(target=load, args=(i, node)) for i, node in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = sum(r.requests for r in results)
    node_cpu = cpu_seconds(node_pids) - node_cpu
    database_cpu = (cluster.cpu_seconds() if cluster is not None else 0.0) - database_cpu
    wrk_cpu = children_cpu_seconds() - wrk_cpu
    return Figure(
        rps=sum(r.rps for r in results),
        node_cpu_us=node_cpu / requests * 1e6,
        database_cpu_us=database_cpu / requests * 1e6,
        failures=sum(r.failures for r in results),
        node_cores=node_cpu / seconds,
        wrk_cpu_us=wrk_cpu / requests * 1e6,
        wrk_cores=wrk_cpu / seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32, help="per node")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per node")
    parser.add_argument("--storage", choices=("filesystem", "s3"), default="filesystem")
    parser.add_argument("--pin", action="store_true", help="node i on CPU i, its wrk on the next CPU")
    parser.add_argument("--wrk-threads", type=int, default=2, help="threads of each wrk")
    parser.add_argument("--pipeline", type=int, default=1, help="requests each wrk connection sends at a time")
    args = parser.parse_args(argv)
    if args.pin and CPUS < 2:
        raise SystemExit("--pin needs two CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-nodes-moto-") as moto_dir:
        moto = MotoServer(Path(moto_dir)).start() if args.storage == "s3" else None
        cluster = PostgresCluster().start()
        try:
            figures = run_rounds(args, cluster, moto)
        finally:
            cluster.remove()
            if moto is not None:
                moto.stop()
    report(args, figures)
    return 1 if any(f.failures for runs in figures.values() for f in runs) else 0


def run_rounds(args: argparse.Namespace, cluster: PostgresCluster, moto: MotoServer | None) -> dict[str, list[Figure]]:
    def storage() -> dict[str, object] | None:
        if moto is None:
            return None
        return {"s3": moto.options(moto.bucket(), rootdirectory="registry"), "delete": {"enabled": True}}

    setups: dict[str, Callable[[], Setup]] = {
        "sqlite, 1 node": lambda: Setup(1, False, storage(), args.pin, args.workers),
        "postgres, 1 node": lambda: Setup(1, True, storage(), args.pin, args.workers),
        "postgres, 2 nodes": lambda: Setup(2, True, storage(), args.pin, args.workers),
    }
    figures: dict[str, list[Figure]] = {}
    for round_ in range(args.rounds):
        for name, make in setups.items():
            setup = make()
            with tempfile.TemporaryDirectory(prefix="bench-nodes-") as scratch:
                nodes = start_nodes(Path(scratch), setup, cluster.new_database() if setup.database else None)
                try:
                    used = cluster if setup.database else None
                    figure = measure(
                        nodes, used, args.seconds, args.connections, args.pin, args.wrk_threads, args.pipeline
                    )
                finally:
                    for node in nodes:
                        node.stop()
            figures.setdefault(name, []).append(figure)
            print(f"round {round_ + 1} {name}: {figure}", file=sys.stderr)
    return figures


def report(args: argparse.Namespace, figures: dict[str, list[Figure]]) -> None:
    def median(runs: list[Figure], attribute: str) -> float:
        return statistics.median(getattr(f, attribute) for f in runs)

    pinned = ", pinned" if args.pin else ""
    print(
        f"| set-up ({args.workers} worker(s) per node, {args.storage}, {args.connections} conns and "
        f"{args.wrk_threads} wrk thread(s) per node{pinned}) | req/s | node CPU µs/req | node cores "
        "| wrk CPU µs/req | wrk cores | PostgreSQL CPU µs/req | failed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in figures.items():
        print(
            f"| {name} | {median(runs, 'rps'):,.0f} | {median(runs, 'node_cpu_us'):.0f} "
            f"| {median(runs, 'node_cores'):.2f} | {median(runs, 'wrk_cpu_us'):.0f} | {median(runs, 'wrk_cores'):.2f} "
            f"| {median(runs, 'database_cpu_us'):.0f} | {sum(f.failures for f in runs)} |"
        )
    two, one = figures["postgres, 2 nodes"], figures["postgres, 1 node"]
    ratio = median(two, "rps") / median(one, "rps")
    projected = 2 * median(one, "node_cpu_us") / median(two, "node_cpu_us")
    print(f"\n2 nodes / 1 node on PostgreSQL: {ratio:.2f}x requests per second measured (target 1.7x)")
    print(f"projected with a core per node and the load elsewhere: {projected:.2f}x (2 x the ratio of CPU per request)")
    if args.pin and CPUS == 2:
        shared = median(two, "node_cpu_us") + median(two, "wrk_cpu_us") + median(two, "database_cpu_us")
        ceiling = 2 * median(one, "node_cpu_us") / shared
        print(
            f"ceiling on these 2 CPUs, quiet: {ceiling:.2f}x (one node has a core to itself; two share both with the "
            "load generators and PostgreSQL: 2 x one node's CPU per request / a node's + wrk's + PostgreSQL's)"
        )
    print(
        f"the nodes got {median(one, 'node_cores'):.2f} core(s) alone and {median(two, 'node_cores'):.2f} as two; "
        f"the load generators took {median(two, 'wrk_cores'):.2f} of this machine's {CPUS} with two nodes"
    )


if __name__ == "__main__":
    sys.exit(main())
