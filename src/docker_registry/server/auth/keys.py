"""The keys tokens are checked with and signed with: certificates of `auth.token.rootcertbundle` (trusted for an
`x5c` chain, and by key id), keys of a JWKS file (by `kid`), and the built-in service's private key.

Key ids of certificates and of our own key are libtrust's (what Distribution 2.8 computes and Docker's token
services put in `kid`): the first 240 bits of the SHA-256 of the DER public key, base32, in groups of four.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from jwt import PyJWKSet
from jwt.exceptions import PyJWKSetError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
CURVE_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class KeyFileError(Exception):
    """A key or certificate file that cannot be used; the message says why."""


def key_id(key: PublicKeyTypes) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def usable_public_key(key: PublicKeyTypes) -> PublicKey:
    if not isinstance(key, PublicKey):
        raise KeyFileError(f"{type(key).__name__} keys cannot sign tokens (RSA, EC or Ed25519 only)")
    return key


def load_bundle(path: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as file:
            certificates = x509.load_pem_x509_certificates(file.read())
    except OSError as exc:
        raise KeyFileError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KeyFileError(f"{path!r} holds no PEM certificates: {exc}") from None
    for certificate in certificates:
        usable_public_key(certificate.public_key())
    return certificates


def load_jwks(path: str) -> dict[str, PublicKey]:
    try:
        with open(path, "rb") as file:
            data: Any = json.load(file)
        keys = PyJWKSet.from_dict(data).keys
    except OSError as exc:
        raise KeyFileError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, PyJWKSetError) as exc:
        raise KeyFileError(f"{path!r} is not a usable JSON Web Key Set: {exc}") from None
    found: dict[str, PublicKey] = {}
    for jwk in keys:
        if not jwk.key_id:
            raise KeyFileError(f"{path!r}: every key needs a `kid` (tokens name their key by it)")
        key = jwk.key
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            key = key.public_key()
        found[jwk.key_id] = usable_public_key(key)
    return found


def load_signing_key(path: str) -> tuple[SigningKey, str]:
    """The private key and the algorithm it signs with."""
    try:
        with open(path, "rb") as file:
            key: PrivateKeyTypes = serialization.load_pem_private_key(file.read(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path!r} is not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise KeyFileError(f"{path!r}: an RSA key of {key.key_size} bits is too weak (2048 at least)")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = CURVE_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise KeyFileError(f"{path!r}: curve {key.curve.name} is not one of P-256, P-384, P-521")
        return key, algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    raise KeyFileError(f"{path!r}: {type(key).__name__} keys cannot sign tokens (RSA, EC or Ed25519 only)")


def verify_chain(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> PublicKey:
    """The leaf's key when each certificate is within its validity, signed by the next, and the last one is a root
    or signed by one; raises KeyFileError otherwise."""
    now = datetime.now(UTC)
    for certificate in chain:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise KeyFileError("a certificate of the x5c chain is outside its validity period")
    for child, parent in itertools.pairwise(chain):
        _check_issued(child, parent)
    last = chain[-1]
    for root in roots:
        if root == last:
            return usable_public_key(chain[0].public_key())
    for root in roots:
        if root.subject == last.issuer and root.not_valid_before_utc <= now <= root.not_valid_after_utc:
            try:
                _check_issued(last, root)
            except KeyFileError:
                continue
            return usable_public_key(chain[0].public_key())
    raise KeyFileError("the x5c chain does not lead to a certificate of rootcertbundle")


def _check_issued(child: x509.Certificate, parent: x509.Certificate) -> None:
    try:
        constraints = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise KeyFileError("a certificate of the x5c chain is signed by one that is no CA")
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise KeyFileError("a certificate of the x5c chain is not signed by the next one") from None
