"""The built-in token service (`auth.token.issue`): Docker's token endpoint, so token authentication needs no other
server.

GET with optional Basic credentials (`?service=&scope=&account=&offline_token=`) answers
`{"token", "access_token", "expires_in", "issued_at"}`, plus `refresh_token` when `offline_token=true` came with
credentials (what `docker login` asks for). POST takes OAuth2 forms as Docker's and containerd's clients send them:
`grant_type=password` (`username`, `password`, `access_type=offline` for a refresh token) and
`grant_type=refresh_token`. A token grants the intersection of the scopes asked and what the `access` rules allow
the caller (anonymous when no credentials came): a scope it may not have is left out, not refused, and the
registry then answers `insufficient_scope`. Wrong credentials are 401; the failed-login limit of the address
applies as in htpasswd mode.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from ..registry import names
from .htpasswd import Htpasswd, basic_credentials
from .issuer import Minted, TokenIssuer, password_stamp
from .limiter import FailureLimiter
from .logins import Blocked, Logins
from .rules import DELETE, PULL, PUSH, Rules
from .scopes import ALL, CATALOG, REGISTRY, REPOSITORY, Scope, parse_all
from .tokens import MAX_TOKEN_LENGTH

log = logging.getLogger(__name__)

REPOSITORY_ACTIONS = (PULL, PUSH, DELETE)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 64 * 1024
REGISTRY_CODES = {401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}


class Refusal(Exception):
    """A token request answered with an error: status, OAuth2 `error` code and description, extra headers."""

    def __init__(self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = dict(headers or {})


class TokenService:
    """The token endpoint of one worker (its users, rules and failed-login tally are the worker's own)."""

    def __init__(
        self,
        path: str,
        issuer: TokenIssuer,
        rules: Rules,
        htpasswd: Htpasswd | None,
        limiter: FailureLimiter,
    ) -> None:
        self.path = path
        self.issuer, self.rules, self.htpasswd, self.limiter = issuer, rules, htpasswd, limiter
        self.logins = Logins(htpasswd, limiter)
        self.challenge = {"WWW-Authenticate": 'Basic realm="token service"'}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
                return await self._get(request)
            if request.method == hdrs.METH_POST:
                return await self._post(request)
            raise Refusal(405, "invalid_request", "GET or POST only", {"Allow": "GET, HEAD, POST"})
        except Refusal as refusal:
            body: dict[str, object] = {"error": refusal.error, "error_description": refusal.description}
            code = REGISTRY_CODES.get(refusal.status)
            if code is not None:  # docker reads a 401's reason from the registry's error format
                body["errors"] = [{"code": code, "message": refusal.description}]
            return web.json_response(body, status=refusal.status, headers={**refusal.headers, **NO_STORE})

    async def _get(self, request: web.Request) -> web.Response:
        query = request.query
        self._check_service(query.get("service"))
        user: str | None = None
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            credentials = basic_credentials(header)
            if credentials is None:
                raise Refusal(401, "invalid_client", "only Basic credentials are accepted", self.challenge)
            if credentials != ("", ""):
                user = await self._login(request, *credentials)
        scopes = parse_all(query.getall("scope", []))
        minted = self._mint(user, self._grant(user, scopes))
        body: dict[str, object] = _answer(minted)
        body["token"] = minted.token
        if user is not None and query.get("offline_token", "").lower() == "true":
            body["refresh_token"] = self._refresh_token(user)
        return web.json_response(body, headers=NO_STORE)

    async def _post(self, request: web.Request) -> web.Response:
        form = await _form(request)
        self._check_service(form.get("service"))
        grant_type = form.get("grant_type")
        scopes = parse_all([form.get("scope") or ""])
        refresh: str | None = None
        if grant_type == "password":
            username, password = form.get("username"), form.get("password")
            if not username or password is None:
                raise Refusal(400, "invalid_request", "username and password are required")
            user = await self._login(request, username, password)
            if form.get("access_type") == "offline":
                refresh = self._refresh_token(user)
        elif grant_type == "refresh_token":
            user = self._refreshed_user(request, form.get("refresh_token") or "")
            refresh = form.get("refresh_token")
        else:
            raise Refusal(400, "unsupported_grant_type", "grant_type must be password or refresh_token")
        granted = self._grant(user, scopes)
        minted = self._mint(user, granted)
        body: dict[str, object] = _answer(minted)
        body["scope"] = " ".join(str(scope) for scope in granted)
        if refresh is not None:
            body["refresh_token"] = refresh
        return web.json_response(body, headers=NO_STORE)

    def _mint(self, user: str | None, granted: list[Scope]) -> Minted:
        """The access token; refused when too many scopes make it longer than a registry takes (`MAX_TOKEN_LENGTH`,
        ours): a client would otherwise be given a token that every request then fails with."""
        minted = self.issuer.access_token(user, granted)
        if len(minted.token) > MAX_TOKEN_LENGTH:
            raise Refusal(
                400, "invalid_scope", f"the scopes asked for make a token over {MAX_TOKEN_LENGTH} bytes; ask for fewer"
            )
        return minted

    def _check_service(self, service: str | None) -> None:
        if service is not None and service != self.issuer.service:
            raise Refusal(400, "invalid_request", f"this token service serves {self.issuer.service!r} only")

    async def _login(self, request: web.Request, user: str, password: str) -> str:
        address = request.remote or ""
        try:
            if await self.logins.check(address, user, password):
                return user
        except Blocked as exc:
            headers = {"Retry-After": str(math.ceil(exc.seconds))}
            raise Refusal(429, "slow_down", "too many failed logins from this address", headers) from None
        log.warning("failed token login from %s for user %r", address, user[:100])  # never the password
        raise Refusal(401, "invalid_grant", "invalid username or password", self.challenge)

    def _refresh_token(self, user: str) -> str:
        entry = self.htpasswd.entry(user) if self.htpasswd is not None else None
        return self.issuer.refresh_token(user, password_stamp(entry or b""))

    def _refreshed_user(self, request: web.Request, token: str) -> str:
        read = self.issuer.read_refresh_token(token)
        entry = self.htpasswd.entry(read[0]) if read is not None and self.htpasswd is not None else None
        if read is None or entry is None or not hmac.compare_digest(read[1], password_stamp(entry)):
            log.warning("refused refresh token from %s", request.remote)
            raise Refusal(401, "invalid_grant", "the refresh token is invalid, expired or revoked")
        return read[0]

    def _grant(self, user: str | None, scopes: list[Scope]) -> list[Scope]:
        """What the rules allow of what was asked; nothing else, and nothing for a malformed name."""
        granted: list[Scope] = []
        for scope in scopes:
            if scope.type == REPOSITORY and names.is_name(scope.name):
                asked = REPOSITORY_ACTIONS if ALL in scope.actions else scope.actions
                actions = tuple(a for a in asked if a in REPOSITORY_ACTIONS and self.rules.allows(user, scope.name, a))
                if actions:
                    granted.append(Scope(REPOSITORY, scope.name, actions))
            elif scope.type == REGISTRY and scope.name == CATALOG and ALL in scope.actions and self._may_list(user):
                granted.append(Scope(REGISTRY, CATALOG, (ALL,)))
        return granted

    def _may_list(self, user: str | None) -> bool:
        """The catalog is filtered by the rules (see `bearer.TokenAccess`): anyone who may pull something may ask."""
        return user is not None or self.rules.anonymous_may_pull_something()


def _answer(minted: Minted) -> dict[str, object]:
    issued = _rfc3339(minted.issued_at)
    return {"access_token": minted.token, "expires_in": minted.expires_in, "issued_at": issued}


def _rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _form(request: web.Request) -> dict[str, str]:
    """The OAuth2 form (`application/x-www-form-urlencoded`, UTF-8, as docker and containerd send it); the first
    value of each field."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise Refusal(400, "invalid_request", "the body must be an application/x-www-form-urlencoded form")
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise Refusal(400, "invalid_request", "the form is too large")
    raw = b""
    while chunk := await request.content.read(MAX_FORM_BYTES + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise Refusal(400, "invalid_request", "the form is too large")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "invalid_request", "the form is not valid UTF-8 form encoding") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form
