"""What a layer's bytes tell as they stream in, in one pass: the blob digest (sha256 of the bytes as sent), the
v1 payload checksum (sha256 of the image json, a newline, then the bytes) and the diff_id (sha256 of the
uncompressed tar: gzip, xz, bzip2 or none, told by the first bytes).

Decompression is bounded: each step yields at most `STEP` bytes, so a layer that inflates a thousandfold is hashed
a slice at a time, never held.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import zlib

from docker_registry.core.digest import Digest, Hasher

STEP = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


class UncompressedHasher:
    """sha256 of the uncompressed stream; `digest()` is None if the bytes are not what their magic promised."""

    def __init__(self, *, hash_plain: bool = True) -> None:
        self._hash = hashlib.sha256()
        self._hash_plain = hash_plain
        """False when the caller hashes the bytes already (`plain` then tells it to use its own digest)."""
        self._kind: str | None = None
        self._head = b""
        self._gzip: zlib._Decompress | None = None
        self._other: lzma.LZMADecompressor | bz2.BZ2Decompressor | None = None
        self.failed = False

    def update(self, data: bytes) -> None:
        if self.failed or not data:
            return
        if self._kind is None:
            self._head += data
            if len(self._head) < len(XZ_MAGIC):
                return
            data, self._head = self._head, b""
            self._kind = _kind_of(data)
        try:
            self._feed(data)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
            self.failed = True

    @property
    def plain(self) -> bool:
        """The bytes are no compressed stream (as far as they were seen)."""
        return self._kind in (None, "tar")

    def _feed(self, data: bytes) -> None:
        if self._kind == "tar":
            if self._hash_plain:
                self._hash.update(data)
            return
        while data:
            data = self._inflate(data) if self._kind == "gzip" else self._unpack(data)

    def _inflate(self, data: bytes) -> bytes:
        """Feed gzip bytes; returns what follows the end of a member (the start of the next one), else b""."""
        if self._gzip is None:
            self._gzip = zlib.decompressobj(wbits=31)
        gzip = self._gzip
        while data:
            self._hash.update(gzip.decompress(data, STEP))
            data = gzip.unconsumed_tail
        if not gzip.eof:
            return b""
        self._gzip = None
        return _next_member(gzip.unused_data)

    def _unpack(self, data: bytes) -> bytes:
        """Feed xz or bzip2 bytes, as `_inflate` does."""
        if self._other is None:
            self._other = lzma.LZMADecompressor() if self._kind == "xz" else bz2.BZ2Decompressor()
        other = self._other
        self._hash.update(other.decompress(data, STEP))
        while not other.eof and not other.needs_input:
            self._hash.update(other.decompress(b"", STEP))
        if not other.eof:
            return b""
        self._other = None
        return _next_member(other.unused_data)

    def digest(self) -> Digest | None:
        if self._kind is None and self._head:  # fewer bytes than a magic number: no compression
            self._kind = "tar"
            if self._hash_plain:
                self._hash.update(self._head)
            self._head = b""
        if self.failed or self._gzip is not None or self._other is not None:
            return None  # a compressed stream that broke off
        return Digest("sha256", self._hash.hexdigest())


def _next_member(rest: bytes) -> bytes:
    """After the end of a compressed member: another member follows, or only zero padding (ignored)."""
    return b"" if rest.strip(b"\x00") == b"" else rest


def _kind_of(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return "tar"


class LayerDigests:
    """The three digests of one layer, fed chunk by chunk. `update` does it all; `update_blob` and `update_rest`
    split the work in two for two threads (hashlib and zlib release the GIL), as the layer PUT does."""

    def __init__(self, image_json: bytes) -> None:
        self.blob = Hasher("sha256")
        self._payload = hashlib.sha256(image_json + b"\n")
        self.uncompressed = UncompressedHasher(hash_plain=False)

    def update(self, data: bytes) -> None:
        self.update_blob(data)
        self.update_rest(data)

    def update_blob(self, data: bytes) -> None:
        self.blob.update(data)

    def update_rest(self, data: bytes) -> None:
        self._payload.update(data)
        self.uncompressed.update(data)

    @property
    def checksum(self) -> str:
        return f"sha256:{self._payload.hexdigest()}"

    @property
    def diff_id(self) -> Digest | None:
        """A plain tar's diff_id is its blob digest: not hashed a third time."""
        if self.uncompressed.plain:
            return self.blob.digest()
        return self.uncompressed.digest()
