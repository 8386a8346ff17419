"""Building the configured authentication for a worker, and checking its files once at start-up."""

from __future__ import annotations

from docker_registry.core.exceptions import ConfigError

from ..config import Config
from .bearer import BearerAuth
from .htpasswd import Htpasswd, HtpasswdError, load
from .issuer import TokenIssuer
from .keys import KeyFileError, load_bundle, load_jwks, load_signing_key
from .limiter import FailureLimiter
from .middleware import Auth, Authenticator
from .rules import Rules
from .service import TokenService
from .tokens import TokenVerifier


def create(config: Config) -> tuple[Authenticator, TokenService | None]:
    """The configured authentication of one worker, and the built-in token service when there is one."""
    assert config.auth is not None
    if config.auth.htpasswd is not None:
        return Auth(config), None
    section = config.auth.token
    assert section is not None
    rules = Rules.from_config(config.access, section.groups)
    try:
        keys = load_jwks(section.jwks) if section.jwks else {}
        roots = load_bundle(section.rootcertbundle) if section.rootcertbundle else []
        service = None
        if section.issue is not None:
            issue = section.issue
            issuer = TokenIssuer(
                issue.key,
                issuer=section.issuer,
                service=section.service,
                lifetime=issue.lifetime,
                refresh_lifetime=issue.refreshlifetime,
            )
            keys[issuer.kid] = issuer.public_key
            htpasswd = Htpasswd(issue.htpasswd) if issue.htpasswd else None
            service = TokenService(issue.path, issuer, rules, htpasswd, FailureLimiter())
    except (KeyFileError, HtpasswdError) as exc:
        raise ConfigError(f"auth.token: {exc}") from None
    verifier = TokenVerifier(
        service=section.service,
        issuer=section.issuer,
        algorithms=section.signingalgorithms,
        roots=roots,
        keys=keys,
    )
    return BearerAuth(verifier, section.realm, service, rules if service is not None else None), service


def check(config: Config) -> None:
    """At start-up, before any worker: the htpasswd files must be readable and hold only bcrypt entries, and the
    token keys and certificates must load."""
    if config.auth is None:
        return
    if config.auth.htpasswd is not None:
        try:
            load(config.auth.htpasswd.path)
        except HtpasswdError as exc:
            raise ConfigError(f"auth.htpasswd.path: {exc}") from None
        return
    section = config.auth.token
    assert section is not None
    for key, path, loader in (
        ("rootcertbundle", section.rootcertbundle, load_bundle),
        ("jwks", section.jwks, load_jwks),
        ("issue.key", section.issue.key if section.issue else None, load_signing_key),
        ("issue.htpasswd", section.issue.htpasswd if section.issue else None, load),
    ):
        if path is not None:
            try:
                loader(path)
            except (KeyFileError, HtpasswdError) as exc:
                raise ConfigError(f"auth.token.{key}: {exc}") from None
