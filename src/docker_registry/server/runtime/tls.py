"""In-process TLS for simple setups (http.tls). It disables sendfile: for speed, terminate TLS in front instead."""

from __future__ import annotations

import ssl

from docker_registry.core.exceptions import ConfigError

from ..config import HTTPConfig

MINIMUM_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


def server_context(http: HTTPConfig) -> ssl.SSLContext | None:
    """The SSL context for the listening socket, or None for plain HTTP; a bad certificate is a ConfigError."""
    if not http.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSIONS[http.tls_minimum]
    try:
        context.load_cert_chain(http.tls_certificate, http.tls_key)
    except (OSError, ssl.SSLError) as exc:
        message = f"http.tls: cannot load certificate {http.tls_certificate!r} / key {http.tls_key!r}: {exc}"
        raise ConfigError(message) from None
    if http.tls.clientcas:
        context.verify_mode = ssl.CERT_REQUIRED  # no certificate, or one no listed CA signed: no connection
        for authority in http.tls.clientcas:
            try:
                context.load_verify_locations(cafile=authority)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"http.tls.clientcas: cannot load {authority!r}: {exc}") from None
    return context
