"""What a handler finds on its application: the registry logic and the configuration, and the guards every write
route applies."""

from __future__ import annotations

import os

from aiohttp import web

from ..config import Config
from ..config.values import space_floor
from ..registry.errors import OUT_OF_SPACE, UNSUPPORTED, RegistryError
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


def require_space(request: web.Request) -> None:
    """Refuse new blob bytes at once when the filesystem driver's disk is below `storage.minfree`: better than
    failing half-way through a layer, and it leaves room for manifests, deletes and the database."""
    storage = config(request).storage
    if storage.minfree is None or storage.driver != "filesystem":
        return
    disk = os.statvfs(storage.options["rootdirectory"])
    free, total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
    if free < space_floor(storage.minfree, total):
        message = f"the registry is out of storage space: {free} bytes free, below storage.minfree ({storage.minfree})"
        raise RegistryError(OUT_OF_SPACE, message=message)
