"""Signed upload-session ids: what a session needs before the database holds a row for it.

`POST /v2/<name>/blobs/uploads/` answers without a database write: the id it hands out carries the session's creation
time and a MAC (HMAC-SHA256 under the registry's key, `KEY_NAME` in `registry_keys`, shared by every worker and
node through the database) over that time, random bits, the repository and the owner. The row is created by the
session's first write (a PATCH or the PUT), with the creation time read from the id; an id that does not verify for
the repository and user of the request is an unknown session, as an unknown id always was.

Form: a layout letter (`f`: the session's bytes are the object `uploads/<id>`; `d`: `uploads/<id>/data`, see
`registry.upload_area`) and 34 characters of lowercase base32 (RFC 4648 without padding) of 21 bytes: the creation
time (4 bytes, whole seconds, big-endian), 9 random bytes, 8 bytes of the MAC. 35 characters: the `uploads.id`
column (36) holds it, it is a valid path segment on every driver, and it shares no form with the UUIDs sessions
begun before had (those keep their rows and are served as before).

The store reads the creation time from the id (`begun`) to create the row; it never checks the MAC, which the
registry logic does before any store call (`verify`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct

KEY_NAME = "upload-ids"
"""The row of `registry_keys` holding the key (migration 0023 draws it)."""

FLAT, FOLDER = "f", "d"
SIGNED = re.compile(r"[fd][a-z2-7]{33}[aeimquy4]")
"""A signed id (its last character carries 3 bits and two zero bits, as base32 of 21 bytes ends)."""
_MAC_BYTES = 8


def _mac(key: bytes, prefix: str, payload: bytes, repository: str, owner: str | None) -> bytes:
    who = b"-" if owner is None else b"+" + owner.encode()
    message = b"%s%s\n%s\n%s" % (prefix.encode(), payload, repository.encode(), who)
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def mint(key: bytes, repository: str, owner: str | None, flat: bool, now: float) -> str:
    """A new session's id, begun at `now` in `repository` by `owner` (None: anonymous)."""
    prefix = FLAT if flat else FOLDER
    payload = struct.pack(">I", int(now)) + os.urandom(9)
    raw = payload + _mac(key, prefix, payload, repository, owner)
    return prefix + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _raw(upload_id: str) -> bytes:
    return base64.b32decode(upload_id[1:].upper() + "======")


def verify(key: bytes, upload_id: str, repository: str, owner: str | None) -> bool:
    """Whether a signed id was minted under `key` for `repository` and `owner`."""
    raw = _raw(upload_id)
    expected = _mac(key, upload_id[0], raw[:-_MAC_BYTES], repository, owner)
    return hmac.compare_digest(raw[-_MAC_BYTES:], expected)


def is_signed(upload_id: str) -> bool:
    return SIGNED.fullmatch(upload_id) is not None


def begun(upload_id: str) -> float | None:
    """When a signed id's session began (whole seconds); None for any other id."""
    if not is_signed(upload_id):
        return None
    return float(struct.unpack(">I", base64.b32decode(upload_id[1:9].upper())[:4])[0])
