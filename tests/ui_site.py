"""A registry with users, rules and content for the web UI's tests: a multi-platform image, a signed image with
referrers, an image whose label carries a script, and repositories to search. Pushed over the HTTP API, as a
client would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx

from registry_api import OCI_MANIFEST, Pushed, canonical, image_manifest, index_manifest, push, push_blob
from registry_process import RegistryProcess

PASSWORDS = {"admin": "admin-secret", "reader": "reader-secret", "jörg": "jörg-secret"}
RULES = [
    {"who": "admin", "repositories": ["*"], "actions": ["*"]},
    {"who": "reader", "repositories": ["ui/*"], "actions": ["pull"]},
    {"who": "jörg", "repositories": ["ui/*"], "actions": ["pull"]},
]
SCRIPT_LABEL = "<script>alert(1)</script>"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"
CREATED = "2026-01-02T03:04:05Z"
NEWEST_PLATFORM_CREATED = "2026-03-04T05:06:07.5+00:00"
"""ui/multi's arm64 image is built after its amd64 one, written in another precision and zone."""


@dataclass
class Site:
    server: RegistryProcess
    multi: Pushed
    signed: Pushed
    signature: Pushed
    sbom: Pushed
    labelled: Pushed


def write_htpasswd(path: Path) -> Path:
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n" for u, p in PASSWORDS.items()]
    path.write_text("".join(lines))
    return path


def start(workdir: Path, delete_enabled: bool = True) -> RegistryProcess:
    htpasswd = write_htpasswd(workdir / "htpasswd")
    extra = {"auth": {"htpasswd": {"realm": "ui-tests", "path": str(htpasswd)}}, "access": RULES}
    return RegistryProcess(workdir / "registry", delete_enabled=delete_enabled, extra_config=extra).start()


def config_with(labels: dict[str, str], arch: str = "amd64", created: str = CREATED) -> bytes:
    return canonical(
        {
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": {"Entrypoint": ["/bin/app"], "Env": ["PATH=/usr/bin", "MODE=<b>bold</b>"], "Labels": labels},
            "history": [{"created": "2026-01-02T03:04:05Z", "created_by": "COPY app /bin/app"}],
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    )


def fill(server: RegistryProcess) -> Site:
    with httpx.Client(base_url=server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as client:
        children = []
        for arch in ("amd64", "arm64"):
            child = image_manifest(
                client,
                "ui/multi",
                config=config_with({"arch": arch}, arch, NEWEST_PLATFORM_CREATED if arch == "arm64" else CREATED),
            )
            push(client, "ui/multi", child)
            children.append(child)
        multi = index_manifest(children)
        push(client, "ui/multi", multi, "latest")

        signed = image_manifest(client, "ui/signed", config=config_with({"org.opencontainers.image.title": "signed"}))
        push(client, "ui/signed", signed, "v1")
        empty = b"{}"
        push_blob(client, "ui/signed", empty)
        signature = image_manifest(
            client,
            "ui/signed",
            config=empty,
            config_media_type="application/vnd.oci.empty.v1+json",
            artifact_type=SIGNATURE_TYPE,
            subject=signed,
            annotations={"dev.cosignproject.cosign/signature": "MEUC"},
        )
        push(client, "ui/signed", signature)
        sbom = image_manifest(
            client,
            "ui/signed",
            config=empty,
            config_media_type="application/vnd.oci.empty.v1+json",
            artifact_type=SBOM_TYPE,
            subject=signed,
        )
        push(client, "ui/signed", sbom)

        labelled = image_manifest(client, "ui/labels", config=config_with({"evil": SCRIPT_LABEL}))
        push(client, "ui/labels", labelled, "xss")
        for name in ("ui/findme-alpha", "ui/other", "private/secret"):
            image = image_manifest(client, name, media_type=OCI_MANIFEST)
            push(client, name, image, "v1")
            push(client, name, image, "to-delete")
    return Site(server, multi, signed, signature, sbom, labelled)


def site_fixture(workdir: Path) -> Iterator[Site]:
    server = start(workdir)
    try:
        yield fill(server)
    finally:
        server.stop()
