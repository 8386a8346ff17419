"""In-process TLS for simple setups (http.tls). It disables sendfile: for speed, terminate TLS in front instead.

The certificate is read again on SIGHUP (`ReloadableTLS`): the listening socket keeps its context, whose SNI
callback, which OpenSSL runs in every handshake (with or without a server name), hands each new connection the
newest context. Connections already open keep the certificate they were made with. A certificate that cannot be
loaded is logged and the previous one stays in use.
"""

from __future__ import annotations

import logging
import ssl

from docker_registry.core.exceptions import ConfigError

from ..config import HTTPConfig

log = logging.getLogger(__name__)

MINIMUM_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    """OpenSSL's own answer to an encrypted key is to prompt "Enter PEM pass phrase:" on the terminal: `serve`
    waited there (and each worker's SIGHUP would have), or without a terminal failed with "[Errno 22] Invalid
    argument". Asked for one, we stop with a message saying what is wrong instead."""
    raise _EncryptedKey


def server_context(http: HTTPConfig) -> ssl.SSLContext | None:
    """The SSL context for the listening socket, or None for plain HTTP; a bad certificate is a ConfigError."""
    if not http.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSIONS[http.tls_minimum]
    try:
        context.load_cert_chain(http.tls_certificate, http.tls_key, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"http.tls.key: {http.tls_key!r} is encrypted with a passphrase, which the registry cannot be given: "
            "store the key unencrypted (openssl pkey -in KEY -out PLAIN), readable by the registry's user only"
        ) from None
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


class ReloadableTLS:
    """The listening context of a worker, and the newest certificate loaded for it."""

    def __init__(self, http: HTTPConfig) -> None:
        self.http = http
        context = server_context(http)
        assert context is not None, "only built when http.tls is configured"
        self.listening = self.current = context
        context.sni_callback = self._pick

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            connection.context = current

    def reload(self) -> bool:
        """Read certificate and key again; on failure keep serving the previous ones."""
        try:
            context = server_context(self.http)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the certificate in use: %s", exc)
            return False
        assert context is not None
        self.current = context
        log.info("SIGHUP: certificate %s re-read; new connections use it", self.http.tls_certificate)
        return True
