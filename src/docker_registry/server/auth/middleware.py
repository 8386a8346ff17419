"""The auth middleware, and htpasswd mode: who the caller is (Basic credentials checked against the htpasswd file),
what the route needs, whether a rule grants it, and, on an upload session, whether the caller began it.

Runs after the error middleware, so its refusals render as the spec's JSON errors: 401 UNAUTHORIZED with the
`WWW-Authenticate: Basic` challenge for a caller without valid credentials, 403 DENIED for a user lacking the right,
429 TOOMANYREQUESTS for an address with too many failed logins. The same check runs before `100 Continue`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from ..config import Config
from ..http.context import ACCESS, registry, served_name
from ..http.routing import resolve, table_for
from ..http.v2 import ROUTES
from ..registry import names
from ..registry.errors import BLOB_UPLOAD_UNKNOWN, DENIED, TOOMANYREQUESTS, UNAUTHORIZED, RegistryError
from ..store.v1 import identity
from .actions import CATALOG, LOGIN, OPEN, SESSION_HANDLERS, required, required_v1, same_owner
from .htpasswd import Htpasswd, basic_credentials
from .limiter import FailureLimiter
from .logins import Blocked, Logins
from .rules import PULL, PUSH, Rules

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestAccess:
    """The `Access` a handler finds on the request (http.context): the user and what they may pull."""

    user: str | None
    rules: Rules

    def may_pull(self, repository: str) -> bool:
        return self.rules.allows(self.user, repository, PULL)


class Auth:
    """The authentication and access rules of one worker."""

    def __init__(self, config: Config) -> None:
        assert config.auth is not None
        assert config.auth.htpasswd is not None
        section = config.auth.htpasswd
        self.realm = section.realm.replace("\\", "\\\\").replace('"', '\\"')
        self.htpasswd = Htpasswd(section.path)
        self.rules = Rules.from_config(config.access, section.groups)
        self.limiter = FailureLimiter()
        self.logins = Logins(self.htpasswd, self.limiter)

    def _challenge(self, detail: list[dict[str, str]] | None = None, message: str | None = None) -> RegistryError:
        headers = {"WWW-Authenticate": f'Basic realm="{self.realm}"'}
        return RegistryError(UNAUTHORIZED, detail, message=message, headers=headers)

    async def _authenticate(self, request: web.Request) -> str | None:
        """The user of valid credentials; None without any. Invalid credentials are refused here."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            return None
        credentials = basic_credentials(header)
        if credentials == ("", ""):
            return None
        address = request.remote or ""
        try:
            if credentials is None:
                if (left := self.limiter.blocked_for(address)) > 0:
                    raise Blocked(left)
                raise self._challenge(message="only Basic credentials are accepted")
            user, password = credentials
            if await self.logins.check(address, user, password):
                return user
        except Blocked as exc:
            retry = {"Retry-After": str(math.ceil(exc.seconds))}
            raise RegistryError(
                TOOMANYREQUESTS, message="too many failed logins from this address", headers=retry
            ) from None
        log.warning("failed login from %s for user %r", address, user[:100])  # never the password
        raise self._challenge(message="invalid username or password")

    async def _may_use_image(self, request: web.Request, user: str | None, image_id: str, action: str) -> bool:
        """Images are global, as in the original, but one that a repository holds (its index images list it, or a
        tag's chain contains it) is read only through a repository the caller may pull, or by its pusher: the right
        to pull one repository does not open every other's images to whoever has their ids. One that none holds is
        its pusher's alone (`V1Holding.readable_by`). Writes need push on a repository that lists the image (or,
        if none does, somewhere), and never reach another user's image: an incomplete one whose json they wrote,
        a complete one the caller cannot read (`V1Holding.writable_by`)."""
        store = registry(request).store
        holding = await store.read(store.sync.v1_image_holding, image_id)
        who = identity(user)  # as the image's pusher was recorded: anonymous callers too are someone
        readable = holding.readable_by(
            who, lambda holder: self.rules.allows(user, holder, PULL), self.rules.allows_somewhere(user, PUSH)
        )
        if action == PULL:
            return readable
        if holding.holders:
            may_write = any(self.rules.allows(user, holder, action) for holder in holding.holders)
        else:
            may_write = self.rules.allows_somewhere(user, action)
        return may_write and holding.writable_by(who, readable)

    async def guard(self, request: web.Request) -> None:
        if ACCESS in request:
            return
        user = await self._authenticate(request)
        path = request.rel_url.raw_path
        routes = table_for(request.app, path, ROUTES)
        try:
            handler, params = resolve(routes, request)
        except RegistryError:
            if user is None:  # an anonymous caller learns nothing of the routes
                raise self._challenge() from None
            raise
        action = required(handler) if routes is ROUTES else required_v1(request.method, path)
        if routes is ROUTES:
            repository = served_name(request, params.name)
        else:
            repository = names.legacy_repository(params.name) if params.name else params.name
        if action == OPEN:
            allowed = True
        elif action == LOGIN:
            allowed = user is not None
        elif action == CATALOG:
            allowed = user is not None or self.rules.anonymous_may_pull_something()
        elif not params.name and routes is not ROUTES:  # a v1 image: no repository in the path
            allowed = await self._may_use_image(request, user, params["image_id"], action)
        else:
            allowed = bool(action) and self.rules.allows(user, repository, action)
        if not allowed:
            scope = [{"Type": "repository", "Name": repository, "Action": action}] if repository else None
            if user is None:
                raise self._challenge(scope)
            raise RegistryError(DENIED, scope)
        if handler in SESSION_HANDLERS:
            upload = await registry(request).upload(params.name, params["uuid"])
            if not same_owner(upload.owner, user):  # as if there were no such session: ids are not for guessing
                raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"uuid": params["uuid"]})
        request[ACCESS] = RequestAccess(user, self.rules)


class Authenticator(Protocol):
    """htpasswd (`Auth`) or token (`bearer.BearerAuth`) authentication: the guard every v2 request passes."""

    async def guard(self, request: web.Request) -> None: ...


def middleware(auth: Authenticator, exempt: str | None, exempt_prefix: str | None = None) -> Middleware:
    """Every request passes the guard but those to `exempt`, the token service's path, and below `exempt_prefix`,
    the web UI's: each authenticates its callers itself (the UI with a login form or Basic, by the same rules)."""

    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path != exempt and not (exempt_prefix and (path == exempt_prefix or path.startswith(exempt_prefix + "/"))):
            await auth.guard(request)
        return await handler(request)

    return auth_middleware
