"""Test images written as OCI image layouts from Python, so the e2e tests need no network and no base image.

Every layer holds fresh random bytes, so two sessions never share blobs and a pull that returns the wrong
content cannot pass by accident. Clients are fed from these layouts (`skopeo copy oci:DIR:TAG ...`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from oci_content import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(frozen=True)
class Image:
    """One platform's image as written: what a pull of it must give back."""

    architecture: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    files: dict[str, bytes]
    """Path inside the image -> content, for checks of what a client extracted."""


@dataclass
class OciLayout:
    """An OCI image layout directory (blobs/, index.json, oci-layout) that the tests fill with tagged images."""

    path: Path
    _refs: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self._write_index()

    def ref(self, tag: str) -> str:
        """The transport reference skopeo, podman and buildah understand."""
        return f"oci:{self.path}:{tag}"

    def write_blob(self, media_type: str, data: bytes, platform: dict[str, str] | None = None) -> Descriptor:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return Descriptor(media_type, digest, len(data), platform)

    def read_blob(self, digest: str) -> bytes:
        return (self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    def add_image(
        self, tag: str | None, architecture: str = "amd64", layer_count: int = 2, layer_size: int = 32 * 1024
    ) -> Image:
        """Write one single-platform image; tag it in index.json when `tag` is given.

        Layer content is random, hence incompressible: `layer_size` is close to what goes over the wire.
        """
        layers: list[Descriptor] = []
        diff_ids: list[str] = []
        files: dict[str, bytes] = {}
        for n in range(layer_count):
            name = f"e2e/{architecture}-layer{n}.bin"
            content = os.urandom(layer_size + n)
            files[name] = content
            tar_bytes = _tar_of({name: content})
            diff_ids.append(sha256(tar_bytes))
            layers.append(self.write_blob(OCI_LAYER_GZIP, gzip.compress(tar_bytes, mtime=0)))
        config = self.write_blob(
            OCI_CONFIG,
            canonical_json(
                {
                    "architecture": architecture,
                    "os": "linux",
                    "created": "2026-11-27T00:00:00Z",
                    "config": {"Cmd": ["/e2e/none"], "Labels": {"e2e.nonce": os.urandom(8).hex()}},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                    "history": [{"created": "2026-11-27T00:00:00Z", "created_by": "e2e_images"}] * layer_count,
                }
            ),
        )
        manifest_bytes = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.as_json(),
                "layers": [layer.as_json() for layer in layers],
            }
        )
        manifest = self.write_blob(OCI_MANIFEST, manifest_bytes, {"architecture": architecture, "os": "linux"})
        if tag is not None:
            self._tag(manifest, tag)
        return Image(architecture, manifest, config, tuple(layers), files)

    def add_index(
        self, tag: str, architectures: tuple[str, ...] = ("amd64", "arm64")
    ) -> tuple[Descriptor, list[Image]]:
        """Write one image per architecture and an image index over them, tagged `tag`."""
        images = [self.add_image(None, arch) for arch in architectures]
        index_bytes = canonical_json(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [img.manifest.as_json() for img in images]}
        )
        index = self.write_blob(OCI_INDEX, index_bytes)
        self._tag(index, tag)
        return index, images

    def write_archive(self, dest: Path) -> Path:
        """The layout as an OCI archive (a tar of the directory), the form `ctr images import` reads."""
        with tarfile.open(dest, "w") as tar:
            for child in sorted(self.path.iterdir()):
                tar.add(child, arcname=child.name)
        return dest

    def _tag(self, descriptor: Descriptor, tag: str) -> None:
        entry = descriptor.as_json()
        entry.pop("platform", None)
        entry["annotations"] = {REF_NAME: tag}
        self._refs = [r for r in self._refs if r["annotations"] != {REF_NAME: tag}]  # type: ignore[index]
        self._refs.append(entry)
        self._write_index()

    def _write_index(self) -> None:
        (self.path / "index.json").write_bytes(
            canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs})
        )


def _tar_of(files: dict[str, bytes]) -> bytes:
    """A layer tarball with parent directories, fixed owners and times, like a build tool would write."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(name).parent) for name in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()
