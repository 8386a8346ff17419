"""Benchmark: garbage collection of a large store, ours against CNCF Distribution 2.8's `garbage-collect`.

    python3 bench/gc.py                  # 100,000 blobs, 10,000 manifests
    python3 bench/gc.py --scale 0.1      # 10,000 blobs, 1,000 manifests
    python3 bench/gc.py --keep           # keep the stores (printed) for a look

Both stores are written directly, not through HTTP (that would take hours): the same blob files, once in our layout
with the metadata database filled by SQL, once in Distribution's on-disk layout (`docker/registry/v2/blobs/...`,
`repositories/<r>/_layers`, `_manifests/revisions`, `_manifests/tags/<t>/current` and `index` link files, manifests
stored as blobs). Of the blobs, 90% are referenced by the manifests (a config and 8 layers each of their own, plus
one of 100 shared base layers) and 10% by none (linked into a repository, as an upload that never got its
manifest leaves them): both collectors must delete exactly those. Then each collector runs once, alone, on its
store: wall time and peak RSS (the command's `VmHWM`), and what it deleted.

Ours runs with `gc.delay: 0s` (no grace period: mark and delete in one run), as Distribution has none.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

DISTRIBUTION = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYERS_PER_MANIFEST = 8
SHARED_LAYERS = 100
MANIFESTS_PER_REPOSITORY = 10


@dataclass
class Blob:
    digest: str
    data: bytes


def blob(content: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(content).hexdigest(), content)


@dataclass
class Store:
    repositories: list[str]
    manifests: list[tuple[int, Blob, list[Blob]]]
    """(repository index, the manifest as a blob, the blobs it references)."""
    orphans: list[tuple[int, Blob]]
    """(repository index, a blob linked there that no manifest references)."""


def design(manifest_count: int, blob_count: int) -> Store:
    """The store's content: `blob_count` blobs in all, `manifest_count` manifests referencing 90% of them."""
    repositories = [f"bench/repo{n}" for n in range(max(1, manifest_count // MANIFESTS_PER_REPOSITORY))]
    own_layers = max(1, (blob_count * 9 // 10 - manifest_count) // manifest_count)
    shared = [blob(f"shared layer {n}".encode() * 4) for n in range(SHARED_LAYERS)]
    manifests = []
    for m in range(manifest_count):
        config = blob(json.dumps({"architecture": "amd64", "os": "linux", "n": m}).encode())
        layers = [blob(f"layer {m} {k} ".encode() * 8) for k in range(own_layers)] + [shared[m % SHARED_LAYERS]]
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": len(config.data)},
            "layers": [{"mediaType": OCI_LAYER, "digest": b.digest, "size": len(b.data)} for b in layers],
        }
        manifests.append((m % len(repositories), blob(json.dumps(document).encode()), [config, *layers]))
    referenced = len({b.digest for _, _, refs in manifests for b in refs})
    orphans = [(n % len(repositories), blob(f"orphan {n}".encode() * 8)) for n in range(blob_count - referenced)]
    return Store(repositories, manifests, orphans)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _blob_file(root: Path, digest: str) -> Path:
    hex_digest = digest.removeprefix("sha256:")
    return root / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def write_ours(store: Store, root: Path) -> None:
    """Blob files in our layout and the metadata rows the registry would have written for the same pushes."""
    from docker_registry.server.store import migrate
    from docker_registry.server.store.engine import create_engine

    root.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{root / 'registry.db'}")
    migrate.upgrade(engine)
    engine.dispose()
    now = time.time() - 3600
    blobs: dict[str, int] = {}
    links: set[tuple[int, str]] = set()
    for repo, _manifest, refs in store.manifests:
        for b in refs:
            if b.digest not in blobs:
                _write(_blob_file(root, b.digest), b.data)
                blobs[b.digest] = len(b.data)
            links.add((repo + 1, b.digest))
    for repo, b in store.orphans:
        _write(_blob_file(root, b.digest), b.data)
        blobs[b.digest] = len(b.data)
        links.add((repo + 1, b.digest))
    db = sqlite3.connect(root / "registry.db")
    with db:
        db.executemany(
            "INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)",
            [(n + 1, name, now) for n, name in enumerate(store.repositories)],
        )
        db.executemany(
            "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?)", [(d, s, now) for d, s in blobs.items()]
        )
        db.executemany(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?)",
            [(r, d, now) for r, d in sorted(links)],
        )
        db.executemany(
            "INSERT INTO manifests (id, repository_id, digest, media_type, content, size, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (n + 1, r + 1, m.digest, OCI_MANIFEST, m.data, len(m.data), now)
                for n, (r, m, _) in enumerate(store.manifests)
            ],
        )
        db.executemany(
            "INSERT OR IGNORE INTO manifest_references (manifest_id, digest, kind) VALUES (?, ?, 'blob')",
            [(n + 1, b.digest) for n, (_, _, refs) in enumerate(store.manifests) for b in refs],
        )
        db.executemany(
            "INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (?, ?, ?, ?)",
            [(r + 1, f"v{n}", n + 1, now) for n, (r, _, _) in enumerate(store.manifests)],
        )
    db.close()


def write_distribution(store: Store, ours: Path, root: Path) -> None:
    """The same blobs and manifests in Distribution 2.8's layout, with its link files. The blobs both collectors
    keep are hard links to our files; the ones they delete are copies of their own: a hard link would let the
    first collector's `unlink` free no blocks (the other name still holds them), sparing it the discards that the
    second one's then pays for both."""
    v2 = root / "docker" / "registry" / "v2"
    done: set[str] = set()
    deleted = {b.digest for _, b in store.orphans}

    def put_blob(b: Blob) -> None:
        if b.digest in done:
            return
        target = _blob_file(v2, b.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = _blob_file(ours, b.digest)
        if source.exists() and b.digest not in deleted:
            os.link(source, target)
        else:
            target.write_bytes(b.data)  # a manifest (Distribution keeps them as blobs too), or a deleted blob
        done.add(b.digest)

    def link(path: Path, digest: str) -> None:
        _write(path / "link", digest.encode())

    for n, (repo, manifest, refs) in enumerate(store.manifests):
        repository = v2 / "repositories" / store.repositories[repo]
        put_blob(manifest)
        hex_digest = manifest.digest.removeprefix("sha256:")
        link(repository / "_manifests" / "revisions" / "sha256" / hex_digest, manifest.digest)
        tag = repository / "_manifests" / "tags" / f"v{n}"
        link(tag / "current", manifest.digest)
        link(tag / "index" / "sha256" / hex_digest, manifest.digest)
        for b in refs:
            put_blob(b)
            link(repository / "_layers" / "sha256" / b.digest.removeprefix("sha256:"), b.digest)
    for repo, b in store.orphans:
        put_blob(b)
        link(
            v2 / "repositories" / store.repositories[repo] / "_layers" / "sha256" / b.digest.removeprefix("sha256:"),
            b.digest,
        )


def run_measured(command: list[str], log: Path) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in KiB and exit status of `command`.

    The peak is the process's `VmHWM`, read every 20 ms until it exits (it only grows): `wait4`'s `ru_maxrss` would
    count this script's own memory, which a forked child keeps as its high-water mark across `exec`. Dirty pages are
    written out first, so neither run pays for the writeback of what came before it."""
    os.sync()  # the stores just written (or the other collector's deletions) are not flushed during this run
    began = time.monotonic()
    peak = 0
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass  # exiting
            time.sleep(0.02)
    return time.monotonic() - began, peak, proc.returncode


def compile_bytecode() -> None:
    """Compile the registry's modules, as installing a wheel does: in a checkout where bytecode is never written
    (`PYTHONDONTWRITEBYTECODE`, an editable install), every run compiled its own modules from source, tens of
    milliseconds of start-up that a deployed registry does not pay (nor Distribution's compiled binary)."""
    import docker_registry

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    packages = [str(path) for path in docker_registry.__path__]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *packages], env=env, check=True, stdout=subprocess.DEVNULL
    )


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root / "blobs")) if (root / "blobs").exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 100,000 blobs and 10,000 manifests")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    args = parser.parse_args()
    blobs, manifests = int(100_000 * args.scale), max(1, int(10_000 * args.scale))
    if not shutil.which(DISTRIBUTION):
        print(f"{DISTRIBUTION} is missing: apt-get install docker-registry", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    try:
        began = time.monotonic()
        store = design(manifests, blobs)
        ours, theirs = tmp / "ours", tmp / "distribution"
        write_ours(store, ours)
        write_distribution(store, ours, theirs)
        print(f"stores of {blobs:,} blobs and {manifests:,} manifests written in {time.monotonic() - began:.0f} s")
        ours_config, theirs_config = tmp / "ours.yml", tmp / "distribution.yml"
        ours_config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(ours)}, "delete": {"enabled": True}},
                    "gc": {"delay": "0s"},
                }
            )
        )
        theirs_config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(theirs)}, "delete": {"enabled": True}},
                }
            )
        )
        compile_bytecode()
        before = count_files(ours), count_files(theirs / "docker" / "registry" / "v2")
        command = [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(ours_config), "--json"]
        ours_time, ours_rss, ours_status = run_measured(command, tmp / "ours.log")
        theirs_time, theirs_rss, theirs_status = run_measured(
            [DISTRIBUTION, "garbage-collect", str(theirs_config)], tmp / "distribution.log"
        )
        after = count_files(ours), count_files(theirs / "docker" / "registry" / "v2")
        print(f"{'':24} {'ours':>12} {'Distribution':>14}")
        print(f"{'wall time (s)':24} {ours_time:12.1f} {theirs_time:14.1f}")
        print(f"{'peak RSS (MiB)':24} {ours_rss / 1024:12.0f} {theirs_rss / 1024:14.0f}")
        print(f"{'blob files deleted':24} {before[0] - after[0]:12,} {before[1] - after[1]:14,}")
        print(f"{'exit status':24} {ours_status:12} {theirs_status:14}")
        print(f"speed-up: {theirs_time / ours_time:.1f}x")
        print(f"ours: {(tmp / 'ours.log').read_text().strip()}")
        if args.keep:
            print(f"stores kept in {tmp}")
        return 0 if ours_status == 0 and theirs_status == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
