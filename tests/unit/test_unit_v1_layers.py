"""The one-pass hashing of v1 layers and the file listing's entries, on bytes made here."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import tarfile
import tracemalloc

import pytest

from docker_registry.server.v1.layers import LayerDigests, UncompressedHasher
from docker_registry.server.v1.tarfiles import entry

DATA = os.urandom(200_000) + bytes(3_000_000)


def feed(hasher: UncompressedHasher, data: bytes, step: int = 7_001) -> None:
    for start in range(0, len(data), step):
        hasher.update(data[start : start + step])


@pytest.mark.parametrize(
    "compress",
    [
        gzip.compress,
        lzma.compress,
        bz2.compress,
        lambda data: data,
        lambda data: gzip.compress(data[:1000]) + gzip.compress(data[1000:]),  # two gzip members
        lambda data: gzip.compress(data) + bytes(512),  # zero padding after the stream
    ],
    ids=["gzip", "xz", "bzip2", "plain", "gzip-members", "gzip-padded"],
)
def test_diff_id_is_the_sha256_of_the_uncompressed_bytes(compress: object) -> None:
    hasher = UncompressedHasher()
    feed(hasher, compress(DATA))  # type: ignore[operator]
    digest = hasher.digest()
    assert digest is not None
    assert str(digest) == "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, bz2.compress], ids=["gzip", "xz", "bzip2"])
def test_a_stream_cut_short_has_no_diff_id(compress: object) -> None:
    packed = compress(DATA)  # type: ignore[operator]
    hasher = UncompressedHasher()
    feed(hasher, packed[: len(packed) // 2])
    assert hasher.digest() is None


def test_garbage_after_gzip_magic_has_no_diff_id() -> None:
    hasher = UncompressedHasher()
    feed(hasher, b"\x1f\x8b" + os.urandom(5000))
    assert hasher.digest() is None


def test_inflating_a_bomb_holds_little_memory() -> None:
    """64 MiB of zeros gzip to 64 KiB; fed in one piece, the inflated bytes are hashed a slice at a time."""
    bomb = gzip.compress(bytes(64 * 1024 * 1024))
    hasher = UncompressedHasher()
    tracemalloc.start()
    hasher.update(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert hasher.digest() is not None


def test_payload_checksum_covers_json_newline_and_layer() -> None:
    digests = LayerDigests(b'{"id": "x"}')
    digests.update(b"layer bytes")
    assert digests.checksum == "sha256:" + hashlib.sha256(b'{"id": "x"}\nlayer bytes').hexdigest()
    assert str(digests.blob.digest()) == "sha256:" + hashlib.sha256(b"layer bytes").hexdigest()


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("./etc/passwd", tarfile.REGTYPE, ["/etc/passwd", "f", False]),
        ("etc/passwd", tarfile.REGTYPE, ["/etc/passwd", "f", False]),
        ("./", tarfile.DIRTYPE, ["/", "d", False]),
        (".", tarfile.DIRTYPE, ["/", "d", False]),
        ("./usr/lib/.wh.libold.so", tarfile.REGTYPE, ["/usr/lib/libold.so", "f", True]),
        (".wh.top", tarfile.REGTYPE, ["/top", "f", True]),
        ("./bin/sh", tarfile.SYMTYPE, ["/bin/sh", "s", False]),
        ("./dev/null", tarfile.CHRTYPE, ["/dev/null", "c", False]),
    ],
)
def test_listing_entries(name: str, kind: bytes, expected: list[object]) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    found = entry(member)
    assert found is not None
    assert found[:3] == expected


def test_union_metadata_is_left_out() -> None:
    assert entry(tarfile.TarInfo("./etc/.wh..wh..opq")) is None


@pytest.mark.parametrize("compress", [gzip.compress, lambda data: data], ids=["gzip", "plain"])
def test_layer_digests_split_in_two_agree_with_one_pass(compress: object) -> None:
    layer = compress(DATA)  # type: ignore[operator]
    split, whole = LayerDigests(b"{}"), LayerDigests(b"{}")
    for start in range(0, len(layer), 100_000):
        split.update_blob(layer[start : start + 100_000])
        split.update_rest(layer[start : start + 100_000])
        whole.update(layer[start : start + 100_000])
    assert str(split.diff_id) == str(whole.diff_id) == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert split.checksum == whole.checksum
    assert str(split.blob.digest()) == "sha256:" + hashlib.sha256(layer).hexdigest()
