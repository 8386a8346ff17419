"""Signed cookies (the login session and the CSRF token, both HMAC-SHA256 under `ui.secret`), and sealed places in
lists (Fernet under a key derived from it).

The session cookie carries the user and its expiry, signed together with the user's password entry as the
htpasswd file holds it (never put in the cookie): nothing is stored on the server, so any worker or node with the
same secret accepts it, and a changed password or a removed user ends the session.

The CSRF defence is a random value in an HttpOnly, SameSite=Strict cookie, and forms carry its HMAC: a page of
another site can neither read the cookie nor compute the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken

SESSION_COOKIE = "registry_ui_session"
CSRF_COOKIE = "registry_ui_csrf"
CSRF_FIELD = "csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: str | None, lifetime: float) -> None:
        # Without a configured secret: one per run, drawn before the workers fork (see preparation.prepare).
        self._key = hashlib.sha256((secret or secrets.token_hex(32)).encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(hmac.new(self._key, b"seal", hashlib.sha256).digest()))
        self.lifetime = lifetime

    def seal(self, text: str) -> str:
        """`text` encrypted and authenticated (Fernet), for a link: a page's place in a list that the viewer must
        not read (the name of a repository they may not pull)."""
        return self._fernet.encrypt(text.encode()).decode()

    def unseal(self, token: str) -> str | None:
        """What `seal` sealed; None for anything else."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError, ValueError):
            return None

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{text}".encode(), hashlib.sha256).digest())

    def _session_mac(self, body: str, entry: bytes) -> str:
        return self._mac("session", f"{body}\0{_b64(hashlib.sha256(entry).digest())}")

    def session(self, user: str, entry: bytes, now: float | None = None) -> str:
        """A cookie for `user`, whose password entry is `entry` now."""
        expires = int((now if now is not None else time.time()) + self.lifetime)
        body = f"{_b64(user.encode())}.{expires}"
        return f"{body}.{self._session_mac(body, entry)}"

    def session_user(
        self, cookie: str | None, entry_of: Callable[[str], bytes | None], now: float | None = None
    ) -> str | None:
        """The user of a valid, unexpired session cookie whose password entry is still the one it was signed
        with; None otherwise."""
        if not cookie or cookie.count(".") != 2:
            return None
        encoded, expires, mac = cookie.split(".")
        # a cookie is the client's to make up: only what this registry could have signed goes further
        if not (cookie.isascii() and expires.isdigit() and len(expires) <= 12) or int(expires) < (now or time.time()):
            return None
        try:
            user = _unb64(encoded).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        entry = entry_of(user)
        if entry is None or not hmac.compare_digest(mac, self._session_mac(f"{encoded}.{expires}", entry)):
            return None
        return user

    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(32)

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def csrf_valid(self, cookie: str | None, token: str | None) -> bool:
        if not (cookie and token and cookie.isascii() and token.isascii()):  # compare_digest takes ASCII str only
            return False
        return hmac.compare_digest(token, self.csrf_token(cookie))
