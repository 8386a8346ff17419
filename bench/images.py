"""Images the benchmark pushes: a tiny one seeded over HTTP for the small-request figures, and 3-layer OCI
layouts on disk for `skopeo copy`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import rawhttp
import tests_path  # noqa: F401 - makes oci_content importable
from loadgen import require

from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

REF_NAME = "bench"


def seed_small_image(base: str, repo: str, tag: str) -> tuple[str, int]:
    """One 1 KiB layer, a config and an OCI manifest under `tag`; returns (layer digest, layer size)."""
    layer = os.urandom(1024)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for blob in (layer, config):
        rawhttp.put_blob(base, repo, blob, sha256(blob))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    rawhttp.put_manifest(base, repo, tag, manifest, OCI_MANIFEST)
    return sha256(layer), len(layer)


def build_layout(directory: Path, layer_sizes: list[int]) -> int:
    """An OCI image layout of random gzip layers (stored, not compressed: skopeo then sends them as they are
    instead of spending the run gzipping); returns the bytes of blobs a push sends."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    scratch = directory / "scratch"
    scratch.mkdir()
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        payload = scratch / f"file{i}"
        with payload.open("wb") as f:
            for left in range(size, 0, -8 * 1024 * 1024):
                f.write(os.urandom(min(left, 8 * 1024 * 1024)))
        tar_path = scratch / f"layer{i}.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(payload, arcname=f"data{i}.bin")
        gz_path = scratch / f"layer{i}.tar.gz"
        with tar_path.open("rb") as src, gzip.GzipFile(gz_path, "wb", compresslevel=0, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        diff_ids.append(_file_digest(tar_path))
        digest = _file_digest(gz_path)
        gz_path.rename(blobs / digest.removeprefix("sha256:"))
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": (blobs / digest[7:]).stat().st_size})
    shutil.rmtree(scratch)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": layers,
        }
    ).encode()
    for blob in (config, manifest):
        (blobs / sha256(blob)[7:]).write_bytes(blob)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": REF_NAME},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return sum(layer["size"] for layer in layers) + len(config) + len(manifest)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def skopeo_copy_seconds(source: str, destination: str) -> float:
    """Wall time of one `skopeo copy` over plain HTTP on loopback."""
    argv = [
        require("skopeo", "skopeo"),
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        source,
        destination,
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy {source} {destination} failed:\n{done.stderr}")
    return elapsed
