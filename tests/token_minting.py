"""Keys, certificates and tokens for testing token authentication, made with `cryptography` and PyJWT: a root CA
whose certificate is the `rootcertbundle`, an intermediate and a leaf for `x5c` chains, and a JWT minter that
names its key the ways token services do (`kid` as libtrust computes it, `x5c`, or a JWKS `kid`). The benchmark
mints its tokens with it too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def libtrust_kid(key: Any) -> str:
    """The key id Distribution 2.8 gives a key (of a private key: of its public half)."""
    if not hasattr(key, "public_bytes"):
        key = key.public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def pem_private(key: PrivateKey) -> bytes:
    encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def certificate(
    subject: str, key: PrivateKey, issuer: tuple[str, PrivateKey] | None = None, ca: bool = True
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    signer = issuer[1] if issuer else key
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


@dataclass
class TokenKeys:
    """Everything a token test needs, written under one folder."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    leaf_key: rsa.RSAPrivateKey
    leaf: x509.Certificate
    jwks_key: ed25519.Ed25519PrivateKey
    service_key: rsa.RSAPrivateKey
    bundle: Path
    jwks: Path
    service_key_path: Path

    @classmethod
    def make(cls, folder: Path) -> TokenKeys:
        folder.mkdir(parents=True, exist_ok=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = certificate("token root", root_key)
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        intermediate = certificate("token intermediate", intermediate_key, ("token root", root_key))
        leaf_key = rsa.generate_private_key(65537, 2048)
        leaf = certificate("token signer", leaf_key, ("token intermediate", intermediate_key), ca=False)
        jwks_key = ed25519.Ed25519PrivateKey.generate()
        service_key = rsa.generate_private_key(65537, 2048)
        bundle = folder / "rootcertbundle.pem"
        bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(jwks_key.public_key()))
        jwks = folder / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "jwks-key-1", "use": "sig"}]}))
        service_key_path = folder / "service.key"
        service_key_path.write_bytes(pem_private(service_key))
        return cls(
            root_key, root, intermediate_key, intermediate, leaf_key, leaf, jwks_key, service_key, bundle, jwks,
            service_key_path,
        )  # fmt: skip


def claims(
    issuer: str, service: str, access: list[dict[str, Any]], subject: str = "tester", lifetime: int = 300, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "sub": subject, "aud": service, "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": str(time.monotonic_ns()), "access": access, **extra}  # fmt: skip


def repository(name: str, *actions: str) -> dict[str, Any]:
    return {"type": "repository", "name": name, "actions": list(actions)}


def sign(payload: dict[str, Any], key: PrivateKey, algorithm: str, **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def x5c(*certificates: x509.Certificate) -> list[str]:
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificates]


def unsigned(payload: dict[str, Any]) -> str:
    """`alg: none`, which no registry may accept."""
    return _join({"alg": "none", "typ": "JWT"}, payload, b"")


def hmac_with_public_key(payload: dict[str, Any], public_pem: bytes, kid: str) -> str:
    """HS256 "signed" with a trusted public key as the secret: the classic algorithm-confusion forgery."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def tampered(token: str, **changes: Any) -> str:
    """The token with its payload changed and the original signature kept."""
    head, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    return f"{head}.{_b64(json.dumps(payload).encode())}.{signature}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _join(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}.{_b64(signature)}"
