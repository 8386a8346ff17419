"""Before/after for the pull-through cache's cold pull: `python3 bench/ab_proxy.py --base DIR [--quick] [--rounds N]`.

The setting of `proxy.py` (one Distribution upstream holding a 3-layer image) with three caches in front of it,
all freshly started and empty in every round: ours from the working tree, ours from another source tree (`DIR`
holds its `src/` and `core/src/`, e.g. `git archive <commit> src core/src | tar -x -C DIR`, put on `PYTHONPATH`
ahead of the installed package), and Distribution 2.8 in proxy mode. Each round makes one cold `skopeo copy`
through each, in an order that rotates from round to round, and prints the times; at the end the medians and the
ratios to Distribution. On a shared machine the three share its load alike, which is what makes a change of a few
percent visible where two separate `proxy.py` runs differ by more. No warm-up: the first pull of fresh processes
is what this measures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import proxy
import servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True, help="a source tree holding src/ and core/src/")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base_path = f"{args.base.resolve() / 'src'}:{args.base.resolve() / 'core' / 'src'}"
    sizes = [s * proxy.MIB for s in (proxy.LAYERS_QUICK if args.quick else proxy.LAYERS_FULL)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-proxy-"))
    upstream = servers.distribution(tmp / "upstream", "upstream")
    running: list[servers.Server] = []
    times: dict[str, list[float]] = {}
    try:
        upstream.start()
        proxy.seed_upstream(upstream, tmp / "layout", sizes, proxy.REPO)
        for number in range(args.rounds):
            rounds = tmp / f"round{number}"
            ours, distribution = proxy.cache_servers(rounds, upstream.url, args.workers)
            base = proxy.cache_servers(rounds / "base", upstream.url, args.workers)[0]
            base.name = "base"
            base.command = ["env", f"PYTHONPATH={base_path}", *base.command]
            caches = [ours, base, distribution]
            running = [cache.start() for cache in caches]
            order = caches[number % 3 :] + caches[: number % 3]
            line = []
            for cache in order:
                seconds = proxy.pull_seconds(f"127.0.0.1:{cache.port}", rounds / f"{cache.name}-cold")
                times.setdefault(cache.name, []).append(seconds)
                line.append(f"{cache.name} {seconds:.3f} s")
            print(f"round {number}: " + ", ".join(line), flush=True)
            for cache in running:
                cache.stop()
            running = []
            shutil.rmtree(rounds, ignore_errors=True)
    finally:
        for server in [*running, upstream]:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"cold pull, median of {args.rounds} rounds (noisy on a shared machine):")
    for name in ("ours", "base", "distribution"):
        print(f"  {name:13s} {medians[name]:.3f} s   / Distribution {medians[name] / medians['distribution']:.2f}")


if __name__ == "__main__":
    main()
