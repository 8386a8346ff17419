"""What moving in from CNCF Distribution and checking a store cost: `python3 bench/maintenance.py [--repositories N]
[--tags N] [--layers N] [--layer-size BYTES] [--keep]`.

Writes a storage tree in Distribution's layout (`docker/registry/v2/blobs`, `repositories/<name>/_layers`,
`_manifests/revisions`, `_manifests/tags/<tag>/current`; one OCI image per tag, its own layers and config, names
nested two deep), then times, each as the `docker-registry` command an operator runs, with its peak memory:
the import copying into another storage root, the same import again (nothing left to do), the import in place
(the tree is the storage root), and `fsck` of the copied store. The tree is written here rather than pushed through
Distribution so that stores of any size take seconds to make; tests/e2e/test_e2e_distribution_import.py checks the
import on a tree Distribution itself wrote. There is no Distribution figure to set beside these: it has neither
command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tests_path  # noqa: F401 - oci_content

from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

V2 = Path("docker/registry/v2")


@dataclass(frozen=True)
class Tree:
    root: Path
    blobs: int
    manifests: int
    size: int


def _blob(v2: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    folder = v2 / "blobs" / "sha256" / digest[:2] / digest
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").write_bytes(data)
    return digest, len(data)


def _link(folder: Path, digest: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "link").write_text(f"sha256:{digest}")


def write_tree(root: Path, repositories: int, tags: int, layers: int, layer_size: int) -> Tree:
    """A Distribution tree of `repositories` repositories with `tags` one-platform images each."""
    v2 = root / V2
    blobs = size = 0
    for r in range(repositories):
        repo = v2 / "repositories" / f"team{r % 10}" / f"app{r}"
        for t in range(tags):
            parts = [_blob(v2, os.urandom(layer_size)) for _ in range(layers)]
            config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
            config_digest, config_size = _blob(v2, config)
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{config_digest}", "size": config_size},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": f"sha256:{d}", "size": s} for d, s in parts],
            }
            manifest_digest, _ = _blob(v2, json.dumps(manifest).encode())
            for digest, _ in [(config_digest, config_size), *parts]:
                _link(repo / "_layers" / "sha256" / digest, digest)
            _link(repo / "_manifests" / "revisions" / "sha256" / manifest_digest, manifest_digest)
            _link(repo / "_manifests" / "tags" / f"v{t}" / "current", manifest_digest)
            blobs += 1 + layers
            size += config_size + sum(s for _, s in parts)
    return Tree(root, blobs, repositories * tags, size)


def _config(path: Path, rootdirectory: Path) -> Path:
    path.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {rootdirectory}\n")
    return path


def timed(*args: str) -> tuple[float, int, str]:
    """Run a `docker-registry` command; its wall time, peak RSS (KiB) and summary line. A failure stops the run."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # no pipe to fill and block
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "docker_registry.server", *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output}{errors}")
    summary = next((line for line in output.splitlines() if " summary: " in line), "")
    return elapsed, usage.ru_maxrss, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=200)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--layer-size", type=int, default=16 * 1024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-maintenance-"))
    try:
        started = time.perf_counter()
        tree = write_tree(work / "distribution", args.repositories, args.tags, args.layers, args.layer_size)
        print(
            f"tree: {args.repositories} repositories, {tree.manifests} manifests, {tree.blobs} blobs, "
            f"{tree.size / 2**20:.1f} MiB, written in {time.perf_counter() - started:.1f} s"
        )
        copied = _config(work / "copied.yml", work / "ours")
        in_place = _config(work / "in-place.yml", tree.root / V2)
        rows = [
            ("import, copied", timed("import", str(copied), "--from", "distribution", str(tree.root))),
            ("import again (nothing to do)", timed("import", str(copied), "--from", "distribution", str(tree.root))),
            ("import, in place", timed("import", str(in_place), "--from", "distribution", str(tree.root))),
            ("fsck of the copied store", timed("fsck", str(copied))),
        ]
        print("\n| command | seconds | blobs/s | peak RSS |\n|---|---|---|---|")
        for name, (seconds, rss, _) in rows:
            print(f"| {name} | {seconds:.1f} | {tree.blobs / seconds:,.0f} | {rss / 1024:.0f} MiB |")
        print()
        for name, (_, _, summary) in rows:
            print(f"{name}: {summary}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
