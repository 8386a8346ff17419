"""An htpasswd file of bcrypt entries (`user:$2y$...`), re-read when it changes, with verified credentials cached
briefly so an authenticated pull costs little more than an anonymous one.

bcrypt is slow on purpose (tens to hundreds of milliseconds): it runs in a thread, never on the event loop, and an
unknown user is checked against a dummy hash of the file's most common cost, so that the answer takes as long as for
most known users. The cache is
keyed by a keyed hash (HMAC with a per-process random key) of user and password, never the password itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass

import bcrypt

log = logging.getLogger(__name__)

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
RELOAD_CHECK_SECONDS = 1.0
"""The file's mtime, size and inode are looked at no more often than this."""
CACHE_SECONDS = 60.0
"""How long a verified user+password is trusted without bcrypt (a removed or changed entry ends it at once)."""
CACHE_MAX_ENTRIES = 10_000
DEFAULT_COST = 10
"""bcrypt's cost for the dummy hash of a file without entries."""
MIN_COST, MAX_COST = 4, 31
BCRYPT_MAX_PASSWORD = 72
"""Bytes of a password bcrypt reads; the rest never counted (see `_check`)."""
_DUMMY_HASHES: dict[int, bytes] = {}
"""A hash of no one's password per cost: made when a file is read at start, else (a re-read file of another most
common cost) at the first unknown user, in the verifying thread (cost 12 takes ~300 ms)."""


class HtpasswdError(Exception):
    """The file cannot be read or holds an entry that is not bcrypt."""


def parse(text: bytes, path: str) -> dict[str, bytes]:
    """user -> bcrypt hash. Blank lines and `#` comments are skipped; any other malformed line is an error."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user, sep, hashed = line.partition(b":")
        if not sep or not user:
            raise HtpasswdError(f"{path}, line {number}: not `user:hash`")
        if not hashed.startswith(BCRYPT_PREFIXES):
            raise HtpasswdError(f"{path}, line {number}: only bcrypt entries ($2y$, $2b$, $2a$) are supported")
        try:
            users[user.decode()] = hashed
        except UnicodeDecodeError:
            raise HtpasswdError(f"{path}, line {number}: the user name is not UTF-8") from None
    return users


def load(path: str) -> dict[str, bytes]:
    try:
        with open(path, "rb") as file:
            return parse(file.read(), path)
    except OSError as exc:
        raise HtpasswdError(f"cannot read {path!r}: {exc.strerror or exc}") from None


@dataclass
class _Cached:
    user: str
    until: float


class Htpasswd:
    """The users of one file, for one worker."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._users = load(path)
        self._dummy_cost = common_cost(self._users)
        dummy_hash(self._dummy_cost)  # now, at start: made at the first unknown user, it would make that one slower
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._cache: dict[bytes, _Cached] = {}
        self._key = secrets.token_bytes(32)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._cache.clear()
        try:
            self._users = load(self.path)
            self._dummy_cost = common_cost(self._users)
            log.info("re-read %s: %d users", self.path, len(self._users))
        except HtpasswdError as exc:
            # Nobody is let in on a file we cannot read: safer than serving users who may have been removed.
            self._users = {}
            log.error("htpasswd file unusable, every login fails until it is fixed: %s", exc)

    def entry(self, user: str) -> bytes | None:
        """The user's bcrypt hash as the file holds it now (the token service stamps refresh tokens with it)."""
        self._refresh()
        return self._users.get(user)

    def _cache_key(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, user.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def remembers(self, user: str, password: str) -> bool:
        """Whether this user and password were verified within `CACHE_SECONDS` (and the file has not changed)."""
        self._refresh()
        cached = self._cache.get(self._cache_key(user, password))
        return cached is not None and cached.until > time.monotonic() and cached.user == user

    async def verify(self, user: str, password: str) -> bool:
        if self.remembers(user, password):
            return True
        key, now = self._cache_key(user, password), time.monotonic()
        hashed = self._users.get(user)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, _check, password.encode(), hashed if hashed is not None else self._dummy_cost
        )
        ok = ok and hashed is not None
        if ok:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = _Cached(user, now + CACHE_SECONDS)
        return ok


def common_cost(users: dict[str, bytes]) -> int:
    """The bcrypt cost most entries have (the higher of equals): an unknown user is checked at this cost, so that
    the answer takes as long as for most known users (a user whose entry has another cost stays told apart)."""
    costs: dict[int, int] = {}
    for hashed in users.values():
        try:
            cost = int(hashed[4:6])
        except ValueError:
            continue
        if MIN_COST <= cost <= MAX_COST:  # bcrypt's own range: another is a malformed entry
            costs[cost] = costs.get(cost, 0) + 1
    return max(costs, key=lambda cost: (costs[cost], cost)) if costs else DEFAULT_COST


def dummy_hash(cost: int) -> bytes:
    """A hash of no one's password at that cost (made once per process and cost)."""
    dummy = _DUMMY_HASHES.get(cost)
    if dummy is None:
        dummy = _DUMMY_HASHES[cost] = bcrypt.hashpw(b"no one's password", bcrypt.gensalt(cost))
    return dummy


def _check(password: bytes, hashed: bytes | int) -> bool:
    """bcrypt compares in constant time; a hash it cannot read counts as a wrong password. An int is the cost of a
    dummy hash to check against (an unknown user). bcrypt reads only the first `BCRYPT_MAX_PASSWORD` bytes of a
    password: Apache's `htpasswd -B`, Go (Distribution) and bcrypt before 5.0 hash and check a longer one by them,
    where bcrypt 5.0 refuses it (a ValueError: its user could never log in)."""
    if isinstance(hashed, int):
        hashed = dummy_hash(hashed)
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header; None for another scheme or a malformed value.
    `("", "")` is what containers/image (podman, skopeo) sends when it has no credentials: anonymous."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII (a header's other bytes), not UTF-8 once decoded
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
