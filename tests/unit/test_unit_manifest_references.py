"""The store checks a manifest's references in the transaction that writes it: what it finds missing or of the
wrong size at commit time is refused, whatever an earlier read saw (a blob deleted in between, say)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from docker_registry.core.digest import Digest
from docker_registry.server.registry.manifests import OCI_INDEX, OCI_MANIFEST, parse_manifest
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import BadReference

CONFIG = b'{"os": "linux"}'
CONFIG_DIGEST = Digest("sha256", hashlib.sha256(CONFIG).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    yield store
    store.close()


def _image(config_size: int = len(CONFIG)) -> bytes:
    media_type = "application/vnd.oci.image.config.v1+json"
    config = {"mediaType": media_type, "digest": str(CONFIG_DIGEST), "size": config_size}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}).encode()


def test_blob_unlinked_before_the_write_is_refused(store: MetadataStore) -> None:
    store.link_blob("repo", CONFIG_DIGEST, len(CONFIG))
    assert store.unlink_blob("repo", CONFIG_DIGEST)  # a DELETE that lands between a check and the write
    with pytest.raises(BadReference) as raised:
        store.put_manifest("repo", parse_manifest(_image(), OCI_MANIFEST), ["latest"])
    assert (raised.value.kind, raised.value.digest, raised.value.stored_size) == ("blob", CONFIG_DIGEST, None)
    assert store.tag_digest("repo", "latest") is None


def test_wrong_sizes_are_refused(store: MetadataStore) -> None:
    store.link_blob("repo", CONFIG_DIGEST, len(CONFIG))
    with pytest.raises(BadReference) as raised:
        store.put_manifest("repo", parse_manifest(_image(999), OCI_MANIFEST))
    assert (raised.value.declared_size, raised.value.stored_size) == (999, len(CONFIG))
    child = parse_manifest(_image(), OCI_MANIFEST)
    store.put_manifest("repo", child)
    descriptor = {"mediaType": OCI_MANIFEST, "digest": str(child.digest), "size": len(child.raw) + 1}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}).encode()
    with pytest.raises(BadReference) as raised:
        store.put_manifest("repo", parse_manifest(index, OCI_INDEX), ["multi"])
    assert (raised.value.kind, raised.value.stored_size) == ("manifest", len(child.raw))


def test_the_same_manifest_twice_is_one_row_and_moves_tags(store: MetadataStore) -> None:
    store.link_blob("repo", CONFIG_DIGEST, len(CONFIG))
    manifest = parse_manifest(_image(), OCI_MANIFEST)
    store.put_manifest("repo", manifest, ["a"])
    store.put_manifest("repo", manifest, ["b"])
    assert store.tag_digest("repo", "a") == store.tag_digest("repo", "b") == manifest.digest
    assert store.manifest("repo", manifest.digest) is not None
