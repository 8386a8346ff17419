"""Manifest GET by tag on several nodes: `python3 bench/nodes.py [--seconds N] [--rounds N] [--connections N]`.

Three set-ups, each started, seeded with a 1-layer image tagged `latest`, loaded with `wrk` (`--connections` per
node) and stopped, in interleaved rounds:

- `sqlite, 1 node`: the single-box registry (the SQLite change signal keeps its caches).
- `postgres, 1 node`: the same node on PostgreSQL (its caches kept by LISTEN/NOTIFY, `store/notify.py`).
- `postgres, 2 nodes`: two such nodes on one storage directory and one database, each loaded by its own `wrk` at
  the same time; the figure is the sum.

Each node runs `--workers` worker processes (default 1, so two nodes have the cores one node of two workers would).
Reported per set-up (median over rounds): requests per second, the nodes' CPU per request (user+system of every
process of every node, from /proc), and PostgreSQL's CPU per request (every process of the private cluster). The
load generators, the nodes and PostgreSQL share this machine's cores: on 2 cores two nodes cannot show 1.7x one
node's throughput, since one node already has what CPU `wrk` leaves; CPU per request is the steadier figure
(a node costs the same per request however many there are, if the caches hold).
"""

from __future__ import annotations

import argparse
import os
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

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Figure:
    rps: float
    node_cpu_us: float
    """Microseconds of node CPU per request."""
    database_cpu_us: float
    failures: int


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


def cluster_pids(cluster: PostgresCluster) -> list[int]:
    """The postmaster and its children (backends, walwriter, ...)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
                children.append(int(entry))
    return [postmaster, *children]


def start_nodes(workdir: Path, count: int, workers: int, database_url: str | None) -> list[servers.Server]:
    nodes = []
    for i in range(count):
        node = servers.ours(workdir / f"node{i}", workers)
        assert node.config is not None
        node.config["storage"]["filesystem"]["rootdirectory"] = str(workdir / "shared")
        if database_url is not None:
            node.config["database"] = {"url": database_url}
        nodes.append(node.start())
    return nodes


def measure(nodes: list[servers.Server], cluster: PostgresCluster | None, seconds: int, connections: int) -> Figure:
    with httpx.Client(base_url=nodes[0].url, timeout=30) as client:
        manifest = image_manifest(client, "bench/nodes")
        push(client, "bench/nodes", manifest, "latest")
    for node in nodes:  # warm every worker's caches and connections
        loadgen.wrk_get(f"{node.url}/v2/bench/nodes/manifests/latest", connections, 1, loadgen.MANIFEST_ACCEPT)
    node_pids = [pid for node in nodes for pid in node.pids()]
    database = cluster_pids(cluster) if cluster is not None else []
    node_cpu, database_cpu = cpu_seconds(node_pids), cpu_seconds(database)
    results: list[loadgen.LoadResult] = []
    lock = threading.Lock()

    def load(node: servers.Server) -> None:
        url = f"{node.url}/v2/bench/nodes/manifests/latest"
        result = loadgen.wrk_get(url, connections, seconds, loadgen.MANIFEST_ACCEPT)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=load, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = sum(r.requests for r in results)
    node_cpu = cpu_seconds(node_pids) - node_cpu
    database_cpu = cpu_seconds(cluster_pids(cluster) if cluster is not None else []) - database_cpu
    return Figure(
        rps=sum(r.rps for r in results),
        node_cpu_us=node_cpu / requests * 1e6,
        database_cpu_us=database_cpu / requests * 1e6,
        failures=sum(r.failures for r in results),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32, help="per node")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per node")
    args = parser.parse_args(argv)
    cluster = PostgresCluster().start()
    figures: dict[str, list[Figure]] = {}
    setups: dict[str, Callable[[Path], list[servers.Server]]] = {
        "sqlite, 1 node": lambda d: start_nodes(d, 1, args.workers, None),
        "postgres, 1 node": lambda d: start_nodes(d, 1, args.workers, cluster.new_database()),
        "postgres, 2 nodes": lambda d: start_nodes(d, 2, args.workers, cluster.new_database()),
    }
    try:
        for round_ in range(args.rounds):
            for name, setup in setups.items():
                with tempfile.TemporaryDirectory(prefix="bench-nodes-") as scratch:
                    nodes = setup(Path(scratch))
                    try:
                        uses_database = name.startswith("postgres")
                        figure = measure(nodes, cluster if uses_database else None, args.seconds, args.connections)
                    finally:
                        for node in nodes:
                            node.stop()
                figures.setdefault(name, []).append(figure)
                print(f"round {round_ + 1} {name}: {figure}", file=sys.stderr)
    finally:
        cluster.remove()
    print(f"| set-up ({args.workers} worker(s) per node, {args.connections} conns per node) | req/s | node CPU µs/req "
          "| PostgreSQL CPU µs/req | failed |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, runs in figures.items():
        print(
            f"| {name} | {statistics.median(f.rps for f in runs):,.0f} "
            f"| {statistics.median(f.node_cpu_us for f in runs):.0f} "
            f"| {statistics.median(f.database_cpu_us for f in runs):.0f} | {sum(f.failures for f in runs)} |"
        )
    two, one = figures["postgres, 2 nodes"], figures["postgres, 1 node"]
    ratio = statistics.median(f.rps for f in two) / statistics.median(f.rps for f in one)
    print(f"\n2 nodes / 1 node on PostgreSQL: {ratio:.2f}x requests per second (target 1.7x on enough cores)")
    return 1 if any(f.failures for runs in figures.values() for f in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
