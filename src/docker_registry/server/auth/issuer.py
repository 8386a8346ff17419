"""Minting tokens for the built-in token service: access tokens naming what was granted, and refresh tokens.

A refresh token carries another audience than the service (`<service>#refresh`), so the registry never takes it
for an access token, and a stamp of the user's htpasswd entry, so a changed password or a removed user ends it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from .keys import PublicKey, key_id, load_signing_key
from .scopes import Scope

REFRESH_SUFFIX = "#refresh"


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    issued_at: int
    expires_in: int


def password_stamp(hashed: bytes) -> str:
    """A short fingerprint of an htpasswd entry (already a bcrypt hash): it changes with the password."""
    return hashlib.sha256(hashed).hexdigest()[:16]


class TokenIssuer:
    def __init__(self, key_path: str, *, issuer: str, service: str, lifetime: float, refresh_lifetime: float) -> None:
        self.key, self.algorithm = load_signing_key(key_path)
        self.public_key: PublicKey = self.key.public_key()
        self.kid = key_id(self.public_key)
        self.issuer, self.service = issuer, service
        self.lifetime, self.refresh_lifetime = int(lifetime), int(refresh_lifetime)

    def _sign(self, payload: dict[str, Any]) -> str:
        return jwt.encode(payload, self.key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"})

    def access_token(self, subject: str | None, scopes: list[Scope]) -> Minted:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [scope.claim() for scope in scopes],
        }
        return Minted(self._sign(payload), now, self.lifetime)

    def refresh_token(self, subject: str, stamp: str) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service + REFRESH_SUFFIX,
            "exp": now + self.refresh_lifetime,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "stamp": stamp,
        }
        return self._sign(payload)

    def read_refresh_token(self, token: str) -> tuple[str, str] | None:
        """(user, stamp) of a refresh token this service issued and that is still valid; None otherwise."""
        try:
            payload = jwt.decode(
                token,
                self.public_key,
                algorithms=[self.algorithm],
                audience=self.service + REFRESH_SUFFIX,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except PyJWTError:
            return None
        subject, stamp = payload.get("sub"), payload.get("stamp")
        if not isinstance(subject, str) or not subject or not isinstance(stamp, str):
            return None
        return subject, stamp
