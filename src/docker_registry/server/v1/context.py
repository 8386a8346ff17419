"""What the v1 handlers find on the application: the v1 logic, built over the worker's registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ..http.context import ACCESS, REGISTRY_KEY, Access
from ..store.v1 import identity
from .images import TRUSTED, Caller, V1Images
from .repositories import V1Repositories


@dataclass(frozen=True, slots=True)
class V1:
    images: V1Images
    repositories: V1Repositories


V1_KEY: web.AppKey[V1] = web.AppKey("v1", V1)


async def v1_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, after the one that opens the stores: the registry is there by then."""
    images = V1Images(app[REGISTRY_KEY])
    app[V1_KEY] = V1(images, V1Repositories(app[REGISTRY_KEY], images))
    yield


def v1(request: web.Request) -> V1:
    return request.app[V1_KEY]


def caller(request: web.Request) -> Caller:
    """Who sent the request, as the auth gate let it through (anyone, without auth)."""
    access: Access | None = request.get(ACCESS)
    return TRUSTED if access is None else Caller(identity(access.user), access.may_pull)
