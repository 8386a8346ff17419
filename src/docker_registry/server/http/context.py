"""What a handler finds on its application: the registry logic and the configuration, and the guards every write
route applies."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..registry.errors import UNSUPPORTED, RegistryError
from ..registry.service import Registry

REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)
CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)


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
