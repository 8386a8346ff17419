"""The grammar of repository names, tags and digests as the registry enforces it."""

from __future__ import annotations

import pytest

from docker_registry.core.digest import Digest
from docker_registry.server.registry import names
from docker_registry.server.registry.errors import DIGEST_INVALID, NAME_INVALID, TAG_INVALID, RegistryError


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b_c__d---e/f0/g", "a" * 255, "x/" * 100 + "y"])
def test_valid_names(name: str) -> None:
    assert names.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a..b", "a___b", "-a", "a-", "a%2fb", "a b", "a" * 256, "a/b\n"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        names.check_name(name)
    assert info.value.error is NAME_INVALID


@pytest.mark.parametrize("tag", ["latest", "_x", "v1.2.3-rc.1", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert names.check_reference(tag) == tag


@pytest.mark.parametrize("tag", ["", "-x", ".x", "A" * 129, "a/b", "a b", "é", "latest\n"])  # `$` matched before "\n"
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(RegistryError) as info:
        names.check_reference(tag)
    assert info.value.error is TAG_INVALID


def test_digest_references() -> None:
    digest = "sha256:" + "0" * 64
    assert names.check_reference(digest) == Digest("sha256", "0" * 64)
    for bad in ("sha256:" + "0" * 63, "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:"):
        with pytest.raises(RegistryError) as info:
            names.check_reference(bad)
        assert info.value.error is DIGEST_INVALID
