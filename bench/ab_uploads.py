"""Before/after for big uploads: `python3 bench/ab_uploads.py --base DIR [--distribution] [--rounds N]`.

Runs our registry twice side by side, one from the working tree and one from another source tree (`DIR` holds
its `src/` and `core/src/`, e.g. `git archive <commit> src core/src | tar -x -C DIR`), put on `PYTHONPATH` ahead
of the installed package, optionally CNCF Distribution as a third side, and uploads one blob (512 MiB unless told)
to each in interleaved rounds (the order rotating), as `run.py` does: POST + PUT with the body (monolithic), and
POST + 8 MiB PATCHes + empty PUT (chunked), a fresh digest every time and earlier uploads' dirty pages flushed
first. Beside every upload the disk's own synced write of the blob (`dd conv=fsync` into the same file system) is
measured, the ceiling of an upload durable when acknowledged. Prints every round and the medians: MB/s and server
CPU seconds per GB. On a shared machine CPU per GB is the figure that least depends on what else runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import servers
import transfer
from ab_writes import registry
from run import cpu_seconds
from servers import Server

MiB = 1024 * 1024
KINDS = {"put": None, "patch": 8 * MiB}


def upload_round(server: Server, blob: Path, kind: str, r: int) -> tuple[float, float]:
    """MB/s and server CPU seconds per GB of one upload."""
    before = cpu_seconds(server)
    mbps = transfer.upload_mbps(server.url, f"ab/{kind}-{r}", blob, KINDS[kind])
    return mbps, (cpu_seconds(server) - before) / (blob.stat().st_size / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True, help="a source tree holding src/ and core/src/")
    parser.add_argument("--distribution", action="store_true", help="CNCF Distribution as a third side")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mib", type=int, default=512, help="blob size in MiB")
    parser.add_argument("--kinds", default="put,patch", help="which uploads: put (monolithic), patch (chunked)")
    args = parser.parse_args()
    base = args.base.resolve()
    kinds = args.kinds.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="ab-uploads-"))
    sides = [registry("base", tmp, f"{base / 'src'}:{base / 'core' / 'src'}"), registry("this", tmp, None)]
    if args.distribution:
        sides.append(servers.distribution(tmp / "distribution"))
    blob = tmp / "blob.bin"
    transfer.random_file(blob, args.mib * MiB)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    disk: list[float] = []
    loads = [os.getloadavg()[0]]
    for side in sides:
        side.start()
    try:
        for r in range(args.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for kind in kinds:
                for side in order:
                    results.setdefault((kind, side.name), []).append(upload_round(side, blob, kind, r))
                    disk.append(transfer.durable_write_mbps(blob, side.workdir / "data"))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} done, load {loads[-1]:.1f}", flush=True)
    finally:
        for side in sides:
            side.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for (kind, name), per_round in results.items():
        mbps = [round(m) for m, _ in per_round]
        cpu = [round(c, 2) for _, c in per_round]
        print(
            f"{kind:5} {name:12}: MB/s {mbps} median {statistics.median(mbps)} | "
            f"CPU s/GB {cpu} median {statistics.median(cpu)}"
        )
    print(f"disk, dd conv=fsync of the blob (MB/s): {[round(d) for d in disk]} median {statistics.median(disk):.0f}")
    print(f"load average (1 min) before and after each round: {[round(x, 1) for x in loads]}")


if __name__ == "__main__":
    main()
