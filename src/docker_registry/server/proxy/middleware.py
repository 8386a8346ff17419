"""The HTTP side of the cache: a middleware in front of the v2 routes that makes sure what a pull of a proxied
repository asks for is cached (fetching it when not), then lets the ordinary v2 handlers serve it, and refuses
writes to proxied names with 405 UNSUPPORTED.

Only an uncached blob is answered here, streamed from the fetch as it arrives (`flight`); everything else is
served by the same handlers as local content, headers, `Range`, `If-None-Match` and sendfile included.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler
from aiohttp.typedefs import Middleware

from docker_registry.core.digest import Digest, parse_digest

from ..http import negotiation, v2
from ..http.context import SERVED_NAME, registry
from ..http.routing import ROUTE_NAME, V1_PREFIXES, V1_ROUTES_KEY, WRITE_METHODS, Params, resolve
from ..http.v2 import blobs, manifests
from ..registry import names
from ..registry.errors import (
    BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    NOT_FOUND,
    UNSUPPORTED,
    RegistryError,
)
from ..registry.manifests import DOCKER_MANIFEST_LIST, OCI_INDEX, default_platform
from .flight import Flights
from .manifests import Manifests
from .pulls import PullRecorder
from .targets import StaleObserver, Target, Targets
from .upstream import UpstreamError, UpstreamNotFound

log = logging.getLogger(__name__)

Handler = Callable[[], Awaitable[web.StreamResponse]]

HANDLERS_KEY: web.AppKey[ProxyHandlers] = web.AppKey("proxy", "ProxyHandlers")  # type: ignore[arg-type]
"""Set when the worker's stores are open (`setup.running`)."""
TAG_LIST_LIMIT = 16 * 1024 * 1024
"""Largest upstream tag list page read (Docker Hub's biggest repositories list a few hundred thousand tags)."""
REFERRERS_LIMIT = 4 * 1024 * 1024
"""Largest upstream referrers index read (a descriptor is some 300 bytes: thousands of signatures and SBOMs)."""
PULL_ROUTES = frozenset({"manifest", "blob"})
WRITE_ROUTES = frozenset({"blob-upload", "blob-upload-chunk"})
UI_REPOSITORIES = "/ui/repositories/"
"""The web UI's pages of a repository, whose forms may delete: `_refuse_other_writes`."""


class ProxyHandlers:
    """What the middleware calls, per worker: the targets, manifest freshness and the blob fetches."""

    def __init__(
        self, targets: Targets, manifests: Manifests, flights: Flights, pulls: PullRecorder, stale: StaleObserver
    ) -> None:
        self.stale = stale
        self.targets = targets
        self.manifests = manifests
        self.flights = flights
        self.pulls = pulls

    async def manifest(self, request: web.Request, target: Target, params: Params) -> web.StreamResponse:
        try:
            reference = names.check_reference(params["reference"])
        except RegistryError:  # neither a tag nor a digest names no manifest, as for local content
            raise RegistryError(MANIFEST_UNKNOWN, {"reference": params["reference"][:300]}) from None
        await self.manifests.ensure(target, reference)
        if not isinstance(reference, Digest):
            await self._ensure_fallback(request, target, reference)
        response = await manifests.get_manifest(request, Params(target.local_name, params.parts))
        self.pulls.note(target.local_name, parse_digest(response.headers["Docker-Content-Digest"]), "manifest")
        return response

    async def _ensure_fallback(self, request: web.Request, target: Target, tag: str) -> None:
        """For a client that takes no manifest list, the list's linux/amd64 image, which is served by tag in its
        place (as Distribution's proxy does): cached with it, else such a pull was a 404 until some other client had
        pulled that image by digest. A child the upstream cannot give leaves the 404 to say why."""
        accept = request.headers.getall("Accept", [])
        if negotiation.accepts(accept, DOCKER_MANIFEST_LIST):  # most clients: no look at the stored manifest
            return
        logic = registry(request)
        _, stored = await logic.get_manifest(target.local_name, tag, pulled=False)  # the handler's GET is the pull
        if negotiation.accepts(accept, stored.media_type):
            return
        child = default_platform(stored)
        if child is not None:
            with contextlib.suppress(RegistryError):
                await self.manifests.ensure(target, child)

    async def blob(self, request: web.Request, target: Target, params: Params) -> web.StreamResponse:
        digest = names.check_digest(params["digest"])
        response = await self._blob(request, target, params, digest)
        self.pulls.note(target.local_name, digest, "blob")
        return response

    async def _blob(self, request: web.Request, target: Target, params: Params, digest: Digest) -> web.StreamResponse:
        local = Params(target.local_name, params.parts)
        serve = blobs.head_blob if request.method == "HEAD" else blobs.get_blob
        stored, named = await self._stored(request, target, digest, partial(serve, request, local))
        if stored is not None:
            return stored
        if request.method == "HEAD":
            return await self._upstream_head(target, digest)
        # a fetch under way may be another upstream's (fetches are shared by digest): joined only once this name's
        # upstream confirms it has the blob, unless a manifest of the same (single) upstream names it
        confirm = None if named and self.targets.single else partial(self._upstream_size, target, digest)
        response = await self.flights.serve(request, target, digest, confirm)
        if response is not None:
            registry(request).blob_pulled(target.local_name, digest, response.content_length or 0)
            return response
        # stored meanwhile, perhaps by a fetch for another repository, linked there only: served as a stored blob
        # (it was a 404 here: 11 to 26 of 180 GETs of a new base layer through six repositories at once)
        stored, _ = await self._stored(request, target, digest, partial(serve, request, local))
        return stored if stored is not None else await serve(request, local)

    async def _stored(
        self, request: web.Request, target: Target, digest: Digest, serve: Callable[[], Awaitable[web.StreamResponse]]
    ) -> tuple[web.StreamResponse | None, bool]:
        """The blob served from the store if it is there (None otherwise), and whether a manifest cached for this
        name names it."""
        logic = registry(request)
        linked, size, named, cached = await logic.store.read(
            logic.store.sync.blob_sizes, target.local_name, digest, target.cache
        )
        if linked is not None:
            return await serve(), named
        if size is None:
            return None, named
        # stored for another repository (cached, or pushed locally): never fetched again, but served here only if
        # this name's upstream has it: a manifest cached for it names it and the bytes came from the same upstream
        # (a repository of its cache links them), or the upstream says so. A manifest is only the upstream's claim:
        # naming a local repository's blob must not open it. Other repositories' blobs are not anyone's to read by
        # digest through any name
        if not (named and cached):
            await self._upstream_size(target, digest)
        if not await logic.store.link_blob(target.local_name, digest, size, recorded=True):
            return None, named  # collected meanwhile: fetched from the upstream (its pin waits for the deletion)
        logic.cache.clear()
        return await serve(), named

    async def tags(self, request: web.Request, target: Target, local: Handler) -> web.StreamResponse:
        """The upstream's tag list while it answers (under the local name), else the cached tags."""
        query = {key: request.query[key] for key in ("n", "last") if key in request.query}
        try:
            raw, link = await target.upstream.tags(target.remote_name, query, TAG_LIST_LIMIT)
            document = _tag_list(raw)
        except UpstreamNotFound:
            return await local()
        except UpstreamError as exc:
            return await self._cached_tags(target, local, exc)
        document["name"] = target.local_name
        if link is None and document.get("tags"):  # the whole list: in lexical order, as the spec wants
            document["tags"] = sorted(document["tags"])
        return web.json_response(document, headers={"Link": target.local_link(link)} if link is not None else None)

    async def referrers(
        self, request: web.Request, target: Target, params: Params, local: Handler
    ) -> web.StreamResponse:
        """The upstream's referrers of a manifest while it answers (a signature or SBOM pushed there after the
        image was cached shows at once), the cached ones when it cannot. An upstream without the referrers API
        (404, as Distribution 2.8) gets its clients a 404 too, so that they look for the referrers tag instead
        (`sha256-<hex>`), which the cache serves as any tag; an empty index would tell them there is nothing."""
        digest = names.check_digest(params["digest"])
        # passed on as it came: the filter's `+`, and the cursor of a page the upstream's `Link` named, in its terms
        query = request.rel_url.raw_query_string
        try:
            raw, headers = await target.upstream.referrers(target.remote_name, str(digest), query, REFERRERS_LIMIT)
            document = json.loads(raw)
            if not (isinstance(document, dict) and isinstance(document.get("manifests"), list)):
                raise UpstreamError("the upstream's referrers index is not one")
        except UpstreamNotFound:
            raise RegistryError(NOT_FOUND, message="the upstream has no referrers API: use the referrers tag") from None
        except (UpstreamError, ValueError) as exc:
            log.warning(
                "serving the cached referrers of %s@%s, upstream unavailable: %s", target.local_name, digest, exc
            )
            return await local()
        if "Link" in headers:
            headers["Link"] = target.local_link(headers["Link"])
        return web.Response(body=raw, headers={**headers, "Content-Type": OCI_INDEX})

    async def _cached_tags(self, target: Target, local: Handler, reason: UpstreamError) -> web.StreamResponse:
        """The cached tags while the upstream cannot list them; a repository never cached has none to show, and
        its client gets the upstream's trouble (503, or 429 while it limits us) rather than a 404 that says the
        repository does not exist."""
        try:
            response = await local()
        except RegistryError as exc:
            if exc.error is not NAME_UNKNOWN:
                raise
            raise reason.client_error() from None
        log.warning("serving the cached tags of %s, upstream unavailable: %s", target.local_name, reason)
        self.stale("tags")
        return response

    async def _upstream_size(self, target: Target, digest: Digest) -> int | None:
        """The blob's size in the upstream's repository (None when it names none); BLOB_UNKNOWN when the upstream
        does not have it there, the upstream's trouble when it cannot say."""
        try:
            return await target.upstream.blob_size(target.remote_name, str(digest))
        except UpstreamNotFound:
            raise RegistryError(BLOB_UNKNOWN, {"digest": str(digest)}) from None
        except UpstreamError as exc:
            raise exc.client_error() from None

    async def _upstream_head(self, target: Target, digest: Digest) -> web.StreamResponse:
        size = await self._upstream_size(target, digest)
        headers = {
            "Docker-Content-Digest": str(digest),
            "ETag": f'"{digest}"',
            "Content-Type": "application/octet-stream",
        }
        if size is not None:
            headers["Content-Length"] = str(size)
        return web.Response(headers=headers)


def _tag_list(raw: bytes) -> dict[str, Any]:
    """The upstream's tag list document, if it is one."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if isinstance(document, dict):
        tags = document.get("tags")
        if tags is None or (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
            return document
    raise UpstreamError("the upstream's tag list is not one")


def naming_middleware() -> Middleware:
    """Before auth: a containerd mirror request (`?ns=`) names the upstream's repository, and is served from the
    cache's prefixed one; say so on the request, so that access rules apply to the repository actually served."""

    @web.middleware
    async def proxy_naming(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        ns = request.query.get("ns")
        if ns and request.path.startswith("/v2/") and request.method in ("GET", "HEAD"):
            try:
                _, params = resolve(v2.ROUTES, request)
            except RegistryError:
                return await handler(request)  # unknown path or method: the v2 dispatcher answers
            target = request.app[HANDLERS_KEY].targets.find(params.name, ns) if params.name else None
            if target is not None and target.local_name != params.name:
                request[SERVED_NAME] = target.local_name
        return await handler(request)

    return proxy_naming


def _refuse_other_writes(request: web.Request, targets: Targets) -> None:
    """A cached name is changed by nothing but the upstream, whichever API asks: the v1 API's writes to its
    repositories (a tag put through v1 replaced a cached image, served until the TTL ran out), the web UI's
    deletes, and, in mirror mode where no name is local, v1 image writes. A v1 image pushed elsewhere (prefix mode)
    becomes visible only through a tag, which is refused here for a cached name."""
    method, path = request.method, request.path
    if method not in WRITE_METHODS:
        return
    if path.startswith(UI_REPOSITORIES) and targets.is_proxied(path.removeprefix(UI_REPOSITORIES)):
        raise RegistryError(UNSUPPORTED, "this repository is a pull-through cache: changes are refused")
    routes = request.app.get(V1_ROUTES_KEY)
    if routes is None or not request.rel_url.raw_path.startswith(V1_PREFIXES):
        return
    try:  # the repository as v1 writes it (a name without a namespace is library/<name>), as the auth gate reads it
        _, params = resolve(routes, request)
        repository = names.legacy_repository(params.name) if params.name else None
    except RegistryError:
        return  # no such route, or no valid name: v1 answers
    if repository is not None and targets.is_proxied(repository):
        raise RegistryError(UNSUPPORTED, f"{repository} is a pull-through cache: changes are refused")
    if "image_id" in params.parts and targets.mirror:  # an image: no repository, and none is local in a mirror
        raise RegistryError(UNSUPPORTED, "this registry is a pull-through cache: pushes are refused")


def middleware() -> Middleware:
    """Requests for proxied names go through the cache; everything else goes on untouched."""

    @web.middleware
    async def proxy(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        if not request.path.startswith("/v2/"):
            _refuse_other_writes(request, request.app[HANDLERS_KEY].targets)
            return await handler(request)
        handlers = request.app[HANDLERS_KEY]
        try:
            route_handler, params = resolve(v2.ROUTES, request)
        except RegistryError:
            return await handler(request)  # unknown path or method: the v2 dispatcher answers
        route = request.get(ROUTE_NAME)
        if not params.name:
            return await handler(request)
        if request.method in WRITE_METHODS and (route in WRITE_ROUTES or route in PULL_ROUTES):
            if handlers.targets.is_proxied(params.name):
                raise RegistryError(UNSUPPORTED, f"{params.name} is a pull-through cache: pushes are refused")
            return await handler(request)
        target = handlers.targets.find(params.name, request.query.get("ns"))
        if target is None or request.method not in ("GET", "HEAD"):
            return await handler(request)
        if route == "manifest":
            return await handlers.manifest(request, target, params)
        if route == "blob":
            return await handlers.blob(request, target, params)
        # tag lists and referrers: under the local name (a containerd `ns` request names the remote one)
        local = Params(target.local_name, params.parts)
        if route == "tags" and request.method == "GET":
            return await handlers.tags(request, target, partial(route_handler, request, local))
        if route == "referrers" and request.method == "GET":
            return await handlers.referrers(request, target, params, partial(route_handler, request, local))
        return await route_handler(request, local)

    return proxy
