"""The ORAS Python SDK against the registry: artifacts with a subject and an artifact type, pulled back, and found
through the referrers API; chunked uploads.

The SDK's `push()` can set a subject and a config media type but not `artifactType`; the signature artifact is
therefore a manifest written here and sent through the SDK's own `upload_blob` / `upload_manifest` helpers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import oras.client
import oras.oci
import pytest
import requests

from e2e_http import get_manifest
from e2e_images import Image, OciLayout
from e2e_tools import require, skopeo_copy
from oci_content import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, sha256
from registry_process import RegistryProcess, implementation

SBOM_CONFIG = "application/vnd.e2e.sbom.config.v1+json"
SBOM_LAYER = "application/vnd.e2e.sbom.layer.v1"
SIGNATURE_TYPE = "application/vnd.e2e.signature.v1"
SIGNATURE_LAYER = "application/vnd.e2e.signature.layer.v1"

TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Subject:
    repo: str
    image: Image

    @property
    def descriptor(self) -> oras.oci.Subject:
        return oras.oci.Subject(OCI_MANIFEST, self.image.manifest.digest, self.image.manifest.size)


@pytest.fixture
def oras_client(registry: RegistryProcess) -> oras.client.OrasClient:
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


@pytest.fixture
def subject(registry: RegistryProcess, layout: OciLayout, repo: str) -> Subject:
    """An image pushed with skopeo, for the artifacts to refer to."""
    require("skopeo")
    image = layout.add_image("v1")
    skopeo_copy("--dest-tls-verify=false", layout.ref("v1"), f"docker://{registry.host}/{repo}:v1")
    return Subject(repo, image)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def push_sbom(client: oras.client.OrasClient, target: str, subject: Subject, workdir: Path) -> list[Path]:
    """Files pushed by the SDK's `push()`, with a subject and a config media type (the referrers' artifactType)."""
    workdir.mkdir()
    files = [random_file(workdir / "sbom.spdx.json", 70_000), random_file(workdir / "extra.bin", 1)]
    config = workdir / "config.json"
    config.write_text(json.dumps({"tool": "e2e"}))
    client.push(
        target=target,
        files=[f"{f}:{SBOM_LAYER}" for f in files],
        manifest_config=f"{config}:{SBOM_CONFIG}",
        subject=subject.descriptor,
        disable_path_validation=True,
        quiet=True,
    )
    return files


def push_signature(
    client: oras.client.OrasClient, target: str, subject: Subject, workdir: Path
) -> tuple[Path, requests.Response]:
    """A manifest with an explicit artifactType and the empty config, sent through the SDK's upload helpers."""
    workdir.mkdir()
    signature = random_file(workdir / "signature.sig", 512)
    empty = workdir / "empty.json"
    empty.write_bytes(b"{}")
    container = client.get_container(target)
    layer = oras.oci.NewLayer(str(signature), media_type=SIGNATURE_LAYER)
    layer["annotations"] = {TITLE: signature.name}
    config = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    for path, descriptor in ((signature, layer), (empty, config)):
        response = client.upload_blob(str(path), container, descriptor)
        assert response.status_code in (200, 201, 202), response.text
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_TYPE,
        "config": config,
        "layers": [layer],
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": subject.image.manifest.digest,
            "size": subject.image.manifest.size,
        },
        "annotations": {"org.opencontainers.image.created": "2026-11-27T00:00:00Z"},
    }
    response = client.upload_manifest(manifest, container)
    assert response.status_code == 201, response.text
    return signature, response


def pulled_files(client: oras.client.OrasClient, target: str, outdir: Path) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in client.pull(target=target, outdir=str(outdir))}


def served_artifact(
    oras_client: oras.client.OrasClient,
    client: httpx.Client,
    subject: Subject,
    target: str,
    files: list[Path],
    out: Path,
) -> dict:
    """The artifact pushed to `target`, read back: it refers to the subject and pulls back as exactly `files`.
    Returns its manifest."""
    manifest = get_manifest(client, subject.repo, target.rsplit(":", 1)[1]).json()
    assert manifest["subject"]["digest"] == subject.image.manifest.digest
    assert pulled_files(oras_client, target, out) == {f.name: f.read_bytes() for f in files}
    return manifest


def test_push_files_with_subject_and_pull_back(
    oras_client: oras.client.OrasClient,
    registry: RegistryProcess,
    client: httpx.Client,
    subject: Subject,
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/{subject.repo}:sbom"
    files = push_sbom(oras_client, target, subject, tmp_path / "sbom")

    manifest = served_artifact(oras_client, client, subject, target, files, tmp_path / "out")
    assert manifest["config"]["mediaType"] == SBOM_CONFIG
    assert [layer["annotations"][TITLE] for layer in manifest["layers"]] == [f.name for f in files]


def test_push_artifact_type_through_upload_helpers_and_pull_back(
    oras_client: oras.client.OrasClient,
    registry: RegistryProcess,
    client: httpx.Client,
    subject: Subject,
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/{subject.repo}:sig"
    signature, _ = push_signature(oras_client, target, subject, tmp_path / "sig")

    manifest = served_artifact(oras_client, client, subject, target, [signature], tmp_path / "out")
    assert manifest["artifactType"] == SIGNATURE_TYPE
    assert manifest["config"]["mediaType"] == OCI_EMPTY


@pytest.mark.xfail(implementation() == "distribution", reason="CNCF Distribution 2.8 has no referrers API", strict=True)
def test_referrers_list_and_filter_by_artifact_type(
    oras_client: oras.client.OrasClient,
    registry: RegistryProcess,
    client: httpx.Client,
    subject: Subject,
    tmp_path: Path,
) -> None:
    push_sbom(oras_client, f"{registry.host}/{subject.repo}:sbom", subject, tmp_path / "sbom")
    _, pushed = push_signature(oras_client, f"{registry.host}/{subject.repo}:sig", subject, tmp_path / "sig")
    # A registry with the referrers API says so when it accepts a manifest with a subject.
    assert pushed.headers.get("OCI-Subject") == subject.image.manifest.digest
    sbom = get_manifest(client, subject.repo, "sbom")
    sig = get_manifest(client, subject.repo, "sig")

    response = client.get(f"/v2/{subject.repo}/referrers/{subject.image.manifest.digest}")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == OCI_INDEX
    listed = {m["digest"]: m for m in response.json()["manifests"]}
    assert set(listed) == {sbom.digest, sig.digest}
    assert listed[sbom.digest]["artifactType"] == SBOM_CONFIG
    assert listed[sig.digest]["artifactType"] == SIGNATURE_TYPE
    assert listed[sig.digest]["annotations"] == {"org.opencontainers.image.created": "2026-11-27T00:00:00Z"}
    for digest, manifest in ((sbom.digest, sbom), (sig.digest, sig)):
        assert listed[digest]["mediaType"] == OCI_MANIFEST
        assert listed[digest]["size"] == len(manifest.body)

    response = client.get(
        f"/v2/{subject.repo}/referrers/{subject.image.manifest.digest}", params={"artifactType": SIGNATURE_TYPE}
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in response.json()["manifests"]] == [sig.digest]

    # An image nothing refers to has an empty (not missing) list.
    other = client.get(f"/v2/{subject.repo}/referrers/{sbom.digest}")
    assert other.status_code == 200
    assert other.json()["manifests"] == []


def test_chunked_upload_of_files_and_a_directory(
    oras_client: oras.client.OrasClient, registry: RegistryProcess, client: httpx.Client, repo: str, tmp_path: Path
) -> None:
    """The SDK's chunked upload (POST, one PATCH with Content-Range per chunk, PUT); chunks do not divide the file."""
    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    big = random_file(src / "big.bin", 5 * 1024 * 1024 + 123)
    nested = random_file(src / "tree" / "sub" / "nested.bin", 4096)
    target = f"{registry.host}/{repo}:chunked"
    oras_client.push(
        target=target,
        files=[str(big), str(src / "tree")],
        do_chunked=True,
        chunk_size=1024 * 1024,
        disable_path_validation=True,
        quiet=True,
    )

    manifest = get_manifest(client, repo, "chunked").json()
    assert [layer["annotations"][TITLE] for layer in manifest["layers"]] == ["big.bin", "tree"]
    assert manifest["layers"][0]["size"] == big.stat().st_size
    out = tmp_path / "out"
    oras_client.pull(target=target, outdir=str(out))
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    assert (out / "tree" / "sub" / "nested.bin").read_bytes() == nested.read_bytes()
