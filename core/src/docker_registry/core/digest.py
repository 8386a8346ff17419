"""Content digests as the OCI image spec defines them, a streaming hasher, and the blob layout.

Grammar (image-spec descriptor.md):
    digest    ::= algorithm ":" encoded
    algorithm ::= algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component ::= [a-z0-9]+
    algorithm-separator ::= [+._-]
    encoded   ::= [a-zA-Z0-9=_-]+
sha256 and sha512 are the registered algorithms, with lowercase hex of exactly 64 and 128 characters; other
well-formed algorithms parse, but `Hasher` only computes the ones hashlib offers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .exceptions import WrongArgumentsError

__all__ = ["SUPPORTED_ALGORITHMS", "Digest", "DigestError", "Hasher", "blob_path", "parse_digest"]

_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_REGISTERED = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}
SUPPORTED_ALGORITHMS = frozenset(_REGISTERED)


class DigestError(WrongArgumentsError):
    """A digest string that does not follow the grammar, or uses an algorithm that cannot be verified."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def parse_digest(value: str, *, verifiable: bool = True) -> Digest:
    """Parse and validate a digest string.

    With `verifiable` (the default) only algorithms the registry can compute are accepted (sha256, sha512),
    since every stored byte must be checked against its digest.
    """
    # fullmatch, not match: `$` alone also matches before a trailing newline, which would reach paths and headers.
    if not isinstance(value, str) or not _GRAMMAR.fullmatch(value):
        raise DigestError(f"invalid digest {value!r}")
    algorithm, encoded = value.split(":", 1)
    pattern = _REGISTERED.get(algorithm)
    if pattern is not None and not pattern.fullmatch(encoded):
        raise DigestError(f"invalid {algorithm} digest {value!r}")
    if pattern is None and verifiable:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return Digest(algorithm, encoded)


class Hasher:
    """Incremental digest of a byte stream; `digest()` may be read at any time without ending the stream."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise DigestError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())


def blob_path(digest: Digest | str) -> str:
    """Content-addressed location of a blob: `blobs/<alg>/<first two of encoded>/<encoded>/data`.

    The same layout CNCF Distribution uses below `docker/registry/v2/`, so trees can be imported in place.
    """
    d = parse_digest(digest) if isinstance(digest, str) else digest
    return f"blobs/{d.algorithm}/{d.encoded[:2]}/{d.encoded}/data"
