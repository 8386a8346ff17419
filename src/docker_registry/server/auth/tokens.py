"""Checking bearer tokens (JWTs) as Distribution's `auth.token` does, with PyJWT over `cryptography`.

The key comes from what the registry trusts, never from the token alone: an `x5c` chain must lead to a certificate
of `rootcertbundle`, a `kid` must name a trusted key (a certificate's libtrust id, a JWKS key, or the built-in
service's key), an embedded `jwk` must be one of those keys. The algorithms are the configured list, which never
holds `none` or HMAC, so neither an unsigned token nor one "signed" with the public key as an HMAC secret passes.
Then: issuer, audience (the service), expiry and not-before with `LEEWAY_SECONDS`, and a well-formed `access`.

A verified token is remembered until it expires (keyed by its text): clients send the same token on every request
of a pull, so the signature is checked once, not per request.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .keys import KeyFileError, PublicKey, key_id, usable_public_key, verify_chain
from .scopes import ALL, Grant, claims

LEEWAY_SECONDS = 60.0
"""Clock difference allowed between the token service and the registry, for `exp`, `nbf` and `iat`."""
CACHE_MAX_ENTRIES = 10_000
KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "RS": rsa.RSAPublicKey,
    "PS": rsa.RSAPublicKey,
    "ES": ec.EllipticCurvePublicKey,
    "Ed": ed25519.Ed25519PublicKey,
}
"""The key type each algorithm family needs (by the first two letters of `RS256`, `PS384`, `ES256`, `EdDSA`)."""
MAX_TOKEN_LENGTH = 16 * 1024


class TokenError(Exception):
    """The token cannot be trusted; the message says why (it is the client's to read: it names no secret)."""


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str | None
    grants: frozenset[Grant]
    not_before: float
    expires: float

    def allows(self, grant: Grant) -> bool:
        """Whether the token lists the grant, or `*` among the actions on its resource: a wildcard action grants
        every action, as Distribution reads tokens (a service that answers `repository:x:*` with `*`)."""
        kind, name, _ = grant
        return grant in self.grants or (kind, name, ALL) in self.grants


class TokenVerifier:
    def __init__(
        self,
        *,
        service: str,
        issuer: str,
        algorithms: list[str],
        roots: list[x509.Certificate],
        keys: dict[str, PublicKey],
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.algorithms = algorithms
        self.roots = roots
        self.keys = dict(keys)
        for root in roots:
            self.keys.setdefault(key_id(root.public_key()), usable_public_key(root.public_key()))
        self._trusted = {key_id(key) for key in self.keys.values()}
        self._cache: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        now = time.time()
        known = self._cache.get(token)
        if known is None:
            known = self._verify(token)
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[token] = known
        if now >= known.expires + LEEWAY_SECONDS:
            self._cache.pop(token, None)
            raise TokenError("the token has expired")
        if now < known.not_before - LEEWAY_SECONDS:
            raise TokenError("the token is not valid yet")
        return known

    def _verify(self, token: str) -> Claims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("the token is too long")
        if not token.isascii():  # a JWT is base64url and dots; other bytes of a header reach here as str
            raise TokenError("the token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise TokenError("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenError(f"tokens signed with {str(algorithm)[:20]!r} are not accepted")
        key = self._signing_key(header)
        if not isinstance(key, KEY_TYPES[algorithm[:2]]):
            raise TokenError(f"the token's {algorithm} does not fit its key ({type(key).__name__})")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (PyJWTError, TypeError, ValueError) as exc:  # PyJWT raises TypeError for some malformed keys
            raise TokenError(f"the token is not valid: {exc}") from None
        try:
            grants = claims(payload.get("access"))
        except ValueError as exc:
            raise TokenError(f"the token's access claim is malformed: {exc}") from None
        subject = payload.get("sub")
        return Claims(
            subject if isinstance(subject, str) and subject else None,
            grants,
            float(payload.get("nbf") or 0),
            float(payload["exp"]),
        )

    def _signing_key(self, header: dict[str, Any]) -> PublicKey:
        """As Distribution: an `x5c` chain first, then an embedded `jwk`, then a `kid`."""
        chain = header.get("x5c")
        if chain is not None:
            if not self.roots:
                raise TokenError("x5c chains are not accepted: no rootcertbundle is configured")
            try:
                if not isinstance(chain, list) or not chain:
                    raise ValueError("empty")
                certificates = [x509.load_der_x509_certificate(base64.b64decode(entry)) for entry in chain]
                return verify_chain(certificates, self.roots)
            except (ValueError, TypeError, binascii.Error):
                raise TokenError("the token's x5c chain is malformed") from None
            except KeyFileError as exc:
                raise TokenError(str(exc)) from None
        embedded = header.get("jwk")
        if embedded is not None:
            try:
                if not isinstance(embedded, dict):
                    raise TypeError("not an object")
                key = usable_public_key(PyJWK(embedded).key)
            except (PyJWTError, KeyFileError, TypeError, ValueError):
                raise TokenError("the token's jwk is malformed") from None
            if key_id(key) not in self._trusted:
                raise TokenError("the token's jwk is not a trusted key")
            return key
        kid = header.get("kid")
        if isinstance(kid, str):
            trusted = self.keys.get(kid)
            if trusted is None:
                raise TokenError("the token's kid names no trusted key")
            return trusted
        raise TokenError("the token names no signing key (x5c, jwk or kid)")
