"""Digest parsing (OCI grammar), the streaming Hasher and the content-addressed blob layout."""

from __future__ import annotations

import hashlib

import pytest

from docker_registry.core import exceptions
from docker_registry.core.digest import Digest, DigestError, Hasher, blob_path, parse_digest

SHA256_EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA512_EMPTY = "sha512:" + hashlib.sha512(b"").hexdigest()


@pytest.mark.parametrize("value", [SHA256_EMPTY, SHA512_EMPTY])
def test_parse_registered_algorithms(value: str) -> None:
    digest = parse_digest(value)
    assert str(digest) == value
    assert digest.algorithm == value.split(":")[0]
    assert digest.encoded == value.split(":")[1]


@pytest.mark.parametrize(
    "value",
    [
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        "blake3:abc=",
        "a.b_c-d:x",
    ],
)
def test_other_algorithms_follow_the_grammar_but_are_not_verifiable(value: str) -> None:
    assert str(parse_digest(value, verifiable=False)) == value
    with pytest.raises(DigestError, match="unsupported"):
        parse_digest(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        ":abc",
        "sha256:",
        "SHA256:" + "a" * 64,
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "g" * 64,
        "sha512:" + "a" * 64,
        "sha256:abc!",
        "sha256::" + "a" * 64,
        "sha256..x:abc",
        "+sha256:abc",
        "sha256:" + "a" * 64 + "\n",
        " sha256:" + "a" * 64,
    ],
)
def test_rejects_malformed_digests(value: str) -> None:
    with pytest.raises(DigestError):
        parse_digest(value, verifiable=False)


@pytest.mark.parametrize("value", [None, b"sha256:abc", 42])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(DigestError):
        parse_digest(value)  # type: ignore[arg-type]


def test_digest_error_is_a_wrong_arguments_error() -> None:
    assert issubclass(DigestError, exceptions.WrongArgumentsError)


def test_digest_is_a_hashable_value() -> None:
    assert parse_digest(SHA256_EMPTY) == parse_digest(SHA256_EMPTY)
    assert len({parse_digest(SHA256_EMPTY), Digest("sha256", SHA256_EMPTY[7:])}) == 1


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_hasher_matches_hashlib_and_counts_bytes(algorithm: str) -> None:
    h = Hasher(algorithm)
    assert str(h.digest()) == f"{algorithm}:{hashlib.new(algorithm, b'').hexdigest()}"
    h.update(b"hello ")
    middle = h.digest()
    h.update(b"\xff\x00world")
    assert middle.encoded == hashlib.new(algorithm, b"hello ").hexdigest()
    assert h.digest().encoded == hashlib.new(algorithm, b"hello \xff\x00world").hexdigest()
    assert h.size == 13
    assert parse_digest(str(h.digest())) == h.digest()


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "blake3", ""])
def test_hasher_refuses_unsupported_algorithms(algorithm: str) -> None:
    with pytest.raises(DigestError):
        Hasher(algorithm)


def test_blob_path_uses_the_distribution_layout() -> None:
    expected = "blobs/sha256/e3/" + SHA256_EMPTY[7:] + "/data"
    assert blob_path(SHA256_EMPTY) == expected
    assert blob_path(parse_digest(SHA256_EMPTY)) == expected
    assert blob_path(SHA512_EMPTY).startswith("blobs/sha512/cf/")


@pytest.mark.parametrize("value", ["sha256:../../etc/passwd", "sha256:" + "a" * 63, "md5:abc"])
def test_blob_path_refuses_bad_digests(value: str) -> None:
    with pytest.raises(DigestError):
        blob_path(value)
