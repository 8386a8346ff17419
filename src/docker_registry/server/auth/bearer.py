"""Token authentication (`auth.token`): the registry side of Docker's token specification.

Each request's needs are the grants Distribution asks for: `repository:<name>:pull` to read, `pull,push` to write
(and `pull` on the source of a mount, `from`), `delete` to delete, `registry:catalog:*` for the catalog, and only a
valid token for `/v2/`. Without a valid token, or with one that lacks a grant, the answer is 401 UNAUTHORIZED with
`WWW-Authenticate: Bearer realm=..,service=..,scope=..` naming exactly those needs, plus `error="invalid_token"` or
`error="insufficient_scope"` as Distribution sends them. Which user gets which grant is the token service's
business: the registry trusts the `access` claims of a token it could verify.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from ..http.context import ACCESS, base_url, registry, served_name
from ..http.routing import Handler, Params, resolve
from ..http.v2 import ROUTES, uploads
from ..registry import names
from ..registry.errors import BLOB_UPLOAD_UNKNOWN, DENIED, UNAUTHORIZED, RegistryError
from .actions import CATALOG, LOGIN, SESSION_HANDLERS, required, same_owner
from .rules import DELETE, PULL, PUSH, Rules
from .scopes import ALL, REGISTRY, REPOSITORY, Grant, merged
from .scopes import CATALOG as CATALOG_RESOURCE
from .service import TokenService
from .tokens import Claims, TokenError, TokenVerifier

CATALOG_GRANT: Grant = (REGISTRY, CATALOG_RESOURCE, ALL)


@dataclass(frozen=True, slots=True)
class TokenAccess:
    """The `Access` of a request with a valid token. The catalog lists what the token may pull, or everything
    when it holds `registry:catalog:*` (filtered by the rules when the built-in service issued it)."""

    claims: Claims
    rules: Rules | None

    @property
    def user(self) -> str | None:
        return self.claims.subject

    def may_pull(self, repository: str) -> bool:
        if self.claims.allows((REPOSITORY, repository, PULL)):
            return True
        if CATALOG_GRANT not in self.claims.grants:
            return False
        return self.rules is None or self.rules.allows(self.claims.subject, repository, PULL)


def needs(handler: Handler, params: Params, request: web.Request) -> list[Grant] | None:
    """The grants a request needs; None for a route no token opens."""
    action = required(handler)
    name = served_name(request, params.name)
    if action == LOGIN:
        return []
    if action == CATALOG:
        return [CATALOG_GRANT]
    if action == PULL:
        return [(REPOSITORY, name, PULL)]
    if action == DELETE:
        return [(REPOSITORY, name, DELETE)]
    if action == PUSH:
        grants = [(REPOSITORY, name, PULL), (REPOSITORY, name, PUSH)]
        source = request.query.get("from") if handler is uploads.start_upload else None
        if source and source != name and names.is_name(source):
            grants.append((REPOSITORY, source, PULL))  # a mount reads the source repository
        return grants
    return None


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BearerAuth:
    """Token authentication of one worker, with the built-in token service when one is configured."""

    def __init__(
        self, verifier: TokenVerifier, realm: str | None, service: TokenService | None, rules: Rules | None
    ) -> None:
        self.verifier = verifier
        self.realm = realm
        self.token_service = service
        self.rules = rules

    def _realm(self, request: web.Request) -> str:
        """The configured realm, or the built-in service at the address the client used (through a TLS-terminating
        proxy: its `https`, not the plain HTTP the proxy speaks to us)."""
        if self.realm is not None:
            return self.realm
        path = self.token_service.path if self.token_service is not None else "/auth/token"
        return f"{base_url(request)}{path}"

    def _challenge(self, request: web.Request, grants: list[Grant], error: str | None, message: str) -> RegistryError:
        challenge = f"Bearer realm={_quoted(self._realm(request))},service={_quoted(self.verifier.service)}"
        scopes = merged(grants)
        if scopes:
            challenge += f",scope={_quoted(' '.join(str(scope) for scope in scopes))}"
        if error is not None:
            challenge += f",error={_quoted(error)}"
        detail = [{"Type": kind, "Name": name, "Action": action} for kind, name, action in grants] or None
        return RegistryError(UNAUTHORIZED, detail, message=message, headers={hdrs.WWW_AUTHENTICATE: challenge})

    def _claims(self, request: web.Request) -> tuple[Claims | None, str | None, str]:
        """The token's claims, or None with the challenge's error and the message saying why."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            return None, None, "authentication required"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, None, "a bearer token is required"
        try:
            return self.verifier.verify(token.strip()), None, ""
        except TokenError as exc:
            return None, "invalid_token", str(exc)

    async def guard(self, request: web.Request) -> None:
        if ACCESS in request:
            return
        claims, error, message = self._claims(request)
        try:
            handler, params = resolve(ROUTES, request)
        except RegistryError:
            if claims is None:  # a caller without a valid token learns nothing of the routes
                raise self._challenge(request, [], error, message) from None
            raise
        grants = needs(handler, params, request)
        if grants is None:
            raise RegistryError(DENIED)
        if claims is None:
            raise self._challenge(request, grants, error, message)
        if not all(claims.allows(grant) for grant in grants):
            raise self._challenge(request, grants, "insufficient_scope", "insufficient scope for this request")
        if handler in SESSION_HANDLERS:
            upload = await registry(request).upload(params.name, params["uuid"])
            if not same_owner(upload.owner, claims.subject):  # as if there were no such session
                raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": params["uuid"]})
        request[ACCESS] = TokenAccess(claims, self.rules)
