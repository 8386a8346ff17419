"""Manifest parsing and validation: what is accepted, what is refused with MANIFEST_INVALID, what gets indexed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from docker_registry.core.digest import Digest
from docker_registry.server.registry.errors import MANIFEST_INVALID, RegistryError
from docker_registry.server.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
)

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 10}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 20}


def image(**extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [LAYER], **extra}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def invalid(raw: bytes, content_type: str = OCI_MANIFEST) -> str:
    with pytest.raises(RegistryError) as info:
        parse_manifest(raw, content_type)
    assert info.value.error is MANIFEST_INVALID
    return str(info.value.detail)


def test_oci_image_is_indexed() -> None:
    raw = encode(image(annotations={"a": "b"}))
    manifest = parse_manifest(raw, OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.digest == Digest("sha256", hashlib.sha256(raw).hexdigest())
    assert [str(d.digest) for d in manifest.blobs] == [CONFIG["digest"], LAYER["digest"]]
    assert manifest.artifact_type == CONFIG["mediaType"]
    assert manifest.annotations == {"a": "b"}
    assert manifest.raw is raw


def test_sha512_digest_when_asked() -> None:
    raw = encode(image())
    assert parse_manifest(raw, OCI_MANIFEST, "sha512").digest == Digest("sha512", hashlib.sha512(raw).hexdigest())


def test_artifact_type_and_subject() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 5}
    manifest = parse_manifest(encode(image(artifactType="application/x-sig", subject=subject)), OCI_MANIFEST)
    assert manifest.artifact_type == "application/x-sig"
    assert manifest.subject is not None
    assert str(manifest.subject.digest) == subject["digest"]


def test_an_empty_artifact_type_is_the_configs_media_type() -> None:
    assert parse_manifest(encode(image(artifactType="")), OCI_MANIFEST).artifact_type == CONFIG["mediaType"]


def test_docker_manifest_foreign_layers_are_not_required() -> None:
    foreign = {**LAYER, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "urls": ["http://x"]}
    body = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": CONFIG, "layers": [LAYER, foreign]}
    manifest = parse_manifest(encode(body), DOCKER_MANIFEST)
    assert [str(d.digest) for d in manifest.blobs] == [CONFIG["digest"], LAYER["digest"]]
    assert [d.urls for d in manifest.foreign] == [("http://x",)]
    assert manifest.artifact_type is None


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_index_children(media_type: str) -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 7, "platform": {"os": "linux"}}
    manifest = parse_manifest(encode({"schemaVersion": 2, "mediaType": media_type, "manifests": [child]}), media_type)
    assert [str(d.digest) for d in manifest.children] == [child["digest"]]
    assert manifest.blobs == []


def test_media_type_inferred_without_header_or_field() -> None:
    body = image()
    del body["mediaType"]
    assert parse_manifest(encode(body), "").media_type == OCI_MANIFEST
    assert parse_manifest(encode({"schemaVersion": 2, "manifests": []}), "application/json").media_type == OCI_INDEX


def test_header_alone_gives_the_type() -> None:
    body = image()
    del body["mediaType"]
    assert parse_manifest(encode(body), OCI_MANIFEST + "; charset=utf-8").media_type == OCI_MANIFEST


@pytest.mark.parametrize(
    ("raw", "content_type", "why"),
    [
        (b"not json", OCI_MANIFEST, "JSON"),
        (b"\xff\xfe", OCI_MANIFEST, "JSON"),
        (b"[1, 2]", OCI_MANIFEST, "object"),
        (encode(image()).decode().encode("utf-16"), OCI_MANIFEST, "UTF-8"),
        (b"\xef\xbb\xbf" + encode(image()), OCI_MANIFEST, "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST, "nested"),
        (encode(image(schemaVersion=1)), OCI_MANIFEST, "schemaVersion"),
        (encode(image(schemaVersion=True)), OCI_MANIFEST, "schemaVersion"),
        (encode(image()), DOCKER_MANIFEST, "does not match"),
        (encode(image(mediaType="application/x-unknown")), "", "unsupported"),
        (encode(image(mediaType=5)), OCI_MANIFEST, "mediaType"),
        (encode(image(config=None)), OCI_MANIFEST, "config"),
        (encode(image(config={**CONFIG, "digest": "sha256:short"})), OCI_MANIFEST, "digest"),
        (encode(image(config={**CONFIG, "size": -1})), OCI_MANIFEST, "size"),
        (encode(image(config={**CONFIG, "size": "10"})), OCI_MANIFEST, "size"),
        (encode(image(layers={"a": 1})), OCI_MANIFEST, "layers"),
        (encode(image(layers=[{**LAYER, "urls": "http://x"}])), OCI_MANIFEST, "urls"),
        (encode(image(annotations={"a": 1})), OCI_MANIFEST, "annotations"),
        (encode(image(artifactType="application/" + "x" * 300)), OCI_MANIFEST, "artifactType"),
        (encode(image(artifactType="no-slash")), OCI_MANIFEST, "artifactType"),
        (encode(image(artifactType="a/b; charset=utf-8")), OCI_MANIFEST, "artifactType"),
        (encode(image(config={**CONFIG, "mediaType": "application/" + "x" * 300})), OCI_MANIFEST, "config"),
        (encode(image(config={**CONFIG, "mediaType": "a/b/c"})), OCI_MANIFEST, "config"),
        (encode(image(layers=[{**LAYER, "mediaType": "text/ plain"}])), OCI_MANIFEST, "layers[0]"),
        (encode(image(subject="sha256:" + "c" * 64)), OCI_MANIFEST, "subject"),
        (encode({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x"}), OCI_INDEX, "manifests"),
        (encode({"schemaVersion": 2}), "", "media type"),
    ],
)
def test_invalid_manifests(raw: bytes, content_type: str, why: str) -> None:
    assert why in invalid(raw, content_type)


def test_media_types_with_every_allowed_character_are_accepted() -> None:
    unusual = "application/vnd.A-b_c+d!e#f$g&h^i.json"
    manifest = parse_manifest(encode(image(config={**CONFIG, "mediaType": unusual})), OCI_MANIFEST)
    assert manifest.artifact_type == unusual
