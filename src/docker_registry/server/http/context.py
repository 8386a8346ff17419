"""What a handler finds on its application: the registry logic and the configuration, and the guards every write
route applies."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

from aiohttp import web

from ..config import Config
from ..config.values import space_floor
from ..registry.errors import OUT_OF_SPACE, UNSUPPORTED, RegistryError
from ..registry.service import Registry

REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)
CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)


class Access(Protocol):
    """Who a request comes from and what they may do, set by an auth feature before the handler runs."""

    @property
    def user(self) -> str | None:
        """The authenticated user; None for an anonymous request."""

    def may_pull(self, repository: str) -> bool: ...


ACCESS: web.RequestKey[Access] = web.RequestKey("docker_registry.access", Access)
"""The request's `Access`, under this key of the request; absent when no auth is configured (everything allowed)."""

ANSWERED: web.RequestKey[int] = web.RequestKey("docker_registry.answered", int)
"""The status of the answer whose head went out: what a client that goes away in the middle of its body was being
sent, and what the access log and metrics then report (a download cut by its client is no server error)."""

SERVED_NAME: web.RequestKey[str] = web.RequestKey("docker_registry.served_name", str)
"""The repository a v2 request is served from when that is not the name in its path (a pull-through cache's
containerd request, `?ns=`, names the upstream's repository and is served under the cache's prefix). Set before
auth, so that access rules apply to the repository actually served."""


def served_name(request: web.Request, name: str) -> str:
    """The repository the request for `name` is served from: `name` itself, unless a feature said otherwise."""
    served: str | None = request.get(SERVED_NAME)
    return name if served is None else served


Guard = Callable[[web.Request], Awaitable[None]]
GUARD_KEY: web.AppKey[Guard] = web.AppKey("guard", Guard)  # type: ignore[arg-type]
"""Set by the auth feature: run before a handler, and before `100 Continue` is sent (raises a RegistryError)."""

Observer = Callable[[web.BaseRequest, web.StreamResponse, float], None]
"""Told of each request once its response is sent (or the client left): request, response, seconds taken."""
OBSERVERS_KEY: web.AppKey[list[Observer]] = web.AppKey("observers", list)
"""Set by the composition root (metrics); the server calls each after every response, beside the access log."""


SERVING: ContextVar[web.Request | None] = ContextVar("docker_registry.serving", default=None)
"""The request being served in this task, for code below the HTTP layer that reports on it without being passed it
(the notifications' recorder). Set by the outermost middleware (`errors.errors_middleware`) while the request's
middlewares and handler run: one step every request takes anyway, not a middleware of its own (a frame and a
coroutine more on every request)."""


def user(request: web.Request) -> str | None:
    """The authenticated user, to own an upload session; None when anonymous or without auth."""
    access: Access | None = request.get(ACCESS)
    return None if access is None else access.user


def may_pull(request: web.Request, repository: str) -> bool:
    access: Access | None = request.get(ACCESS)
    return access is None or access.may_pull(repository)


def base_url(request: web.Request) -> str:
    """`scheme://host` as the client reached the registry: a TLS-terminating proxy's `X-Forwarded-Proto` and
    `X-Forwarded-Host` first (their first values), else the connection's scheme and `Host`. Only for what goes back
    to the client that sent them (a challenge's realm, an event's URL), never for a decision: a client that lies in
    them only misleads itself."""
    headers = request.headers
    scheme = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    host = headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    return f"{scheme if scheme in ('http', 'https') else request.scheme}://{host or request.host}"


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


def config(request: web.Request) -> Config:
    return request.app[CONFIG_KEY]


def require_writable(request: web.Request) -> None:
    if config(request).storage.readonly:
        raise RegistryError(UNSUPPORTED, "the registry is in read-only mode")


def require_delete(request: web.Request) -> None:
    require_writable(request)
    if not config(request).storage.delete_enabled:
        raise RegistryError(UNSUPPORTED, "deletes are disabled")


async def require_space(request: web.Request) -> None:
    """Refuse new blob bytes at once when the filesystem driver's disk is below `storage.minfree`: better than
    failing half-way through a layer, and it leaves room for manifests, deletes and the database."""
    if await registry(request).database_reserve_given_up():
        message = "the registry is out of storage space: its database's reserve went to let deletes free some"
        raise RegistryError(OUT_OF_SPACE, message=message)
    storage = config(request).storage
    if storage.minfree is None or storage.driver != "filesystem":
        return
    disk = os.statvfs(storage.options["rootdirectory"])
    free, total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
    if free < space_floor(storage.minfree, total):
        message = f"the registry is out of storage space: {free} bytes free, below storage.minfree ({storage.minfree})"
        raise RegistryError(OUT_OF_SPACE, message=message)
