"""Images the benchmark pushes: a tiny one seeded over HTTP for the small-request and metadata-write figures, and
OCI layouts on disk for `skopeo copy` (3 large layers, or many small ones).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import rawhttp
import tests_path  # noqa: F401 - makes oci_content importable
from loadgen import require

from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

REF_NAME = "bench"


@dataclass(frozen=True)
class SeededImage:
    """A pushed one-layer image: what mounts and tag PUTs refer to."""

    config: str
    layer: str
    layer_size: int
    manifest: bytes
    media_type: str = OCI_MANIFEST


def seed_image(base: str, repo: str, tag: str, layer_size: int = 1024) -> SeededImage:
    """One random layer, a config and an OCI manifest under `tag`, pushed over HTTP."""
    layer = os.urandom(layer_size)
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
    return SeededImage(sha256(config), sha256(layer), len(layer), manifest)


def seed_small_image(base: str, repo: str, tag: str) -> tuple[str, int]:
    """One 1 KiB layer, a config and an OCI manifest under `tag`; returns (layer digest, layer size)."""
    image = seed_image(base, repo, tag)
    return image.layer, image.layer_size


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
    return _write_image(directory, layers, diff_ids)


TAR_OVERHEAD = 3 * 512
"""A tar of one file: its 512-byte header, then the two zero blocks that end the archive (the data is padded to
whole 512-byte blocks)."""


def small_layer(size: int) -> tuple[bytes, str]:
    """A stored-gzip tar of one random file, about `size` bytes in all (20,000 gives 19,991); returns the layer and
    its diff_id. Built in memory and cut after the end-of-archive blocks: tarfile pads every archive to 10 KiB
    records, which would make a 20 KB layer 30 KB."""
    payload = os.urandom(max(size - TAR_OVERHEAD - 32, 1))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    padded = -(-len(payload) // 512) * 512
    tar_bytes = raw.getvalue()[: 512 + padded + 1024]
    return gzip.compress(tar_bytes, compresslevel=0, mtime=0), sha256(tar_bytes)


def build_small_layout(directory: Path, layers: int, size: int) -> int:
    """An OCI image layout of `layers` fresh random layers of about `size` bytes each (`small_layer`): the many-small-
    layer images CI farms push. Returns the bytes of blobs a push sends."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors, diff_ids = [], []
    for _ in range(layers):
        blob, diff_id = small_layer(size)
        digest = sha256(blob)
        (blobs / digest[7:]).write_bytes(blob)
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": len(blob)})
        diff_ids.append(diff_id)
    return _write_image(directory, descriptors, diff_ids)


def _write_image(directory: Path, layers: list[dict[str, object]], diff_ids: list[str]) -> int:
    """The config, manifest, index.json and oci-layout of a layout whose layer blobs are in place; returns the
    bytes of blobs a push sends."""
    blobs = directory / "blobs" / "sha256"
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
    return sum(int(layer["size"]) for layer in layers) + len(config) + len(manifest)  # type: ignore[call-overload]


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _skopeo_argv(source: str, destination: str) -> list[str]:
    return [
        require("skopeo", "skopeo"),
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        source,
        destination,
    ]


def skopeo_copy_seconds(source: str, destination: str) -> float:
    """Wall time of one `skopeo copy` over plain HTTP on loopback."""
    return skopeo_copies_seconds([(source, destination)])


def skopeo_copies_seconds(copies: list[tuple[str, str]], timeout: float = 900) -> float:
    """Wall time of several `skopeo copy` processes started at once, until the last one ends; any failure raises."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(_skopeo_argv(*pair), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for pair in copies
    ]
    errors = []
    try:
        for (source, destination), proc in zip(copies, procs, strict=True):
            _, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - start)))
            if proc.returncode != 0:
                errors.append(f"skopeo copy {source} {destination} failed:\n{err}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError("\n".join(errors))
    return elapsed
