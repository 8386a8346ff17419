"""The UI's pages: thin handlers that find the viewer, ask the registry logic and the store, and render.

URLs are stable and readable: `/ui/` (overview), `/ui/repositories?q=&after=` (search, keyset pages),
`/ui/repositories/<name>?sort=pushed|name&page=N`, `/ui/repositories/<name>/-/manifests/<tag or digest>`,
`/ui/repositories/<name>/-/blobs/<digest>` (a download),
`/ui/repositories/<name>/-/delete?tag=|digest=` (confirmation; POST deletes). `/-/` cannot occur inside a
repository name (a component starts with a letter or digit), so it separates the name from the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from aiohttp import BasicAuth, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from docker_registry.core import exceptions
from docker_registry.core.digest import parse_digest
from docker_registry.core.exceptions import UnspecifiedError

from ..config import Config
from ..http.context import REGISTRY_KEY
from ..registry import names
from ..registry.cache import BoundedCache
from ..registry.errors import RegistryError
from ..registry.service import Registry
from ..store.browse import RepositorySummary, TagOrder
from ..store.facade import AsyncMetadataStore
from .access import DELETE, PULL, Accounts, LoginsBlocked, Viewer
from .downloads import download
from .images import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    ConfigView,
    ManifestView,
    linked_pretty,
    read_config,
    read_manifest,
)
from .rendering import page
from .sessions import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Signer

log = logging.getLogger(__name__)

PREFIX = "/ui"
_UNSAFE_NEXT = re.compile(r"/\.\.?(/|$)|[\\\x00-\x20\x7f]")
"""A `..` or `.` path segment, a backslash, a control character or a space (URL parsers drop tabs and newlines, so
`.%09.` becomes `..`): a login's `next` must stay under the UI as browsers resolve it."""
REPOSITORIES_PER_PAGE = 50
REPOSITORIES_READ = 1000
"""Names read at a time when looking for one the viewer may see."""
REPOSITORIES_SCANNED = 20_000
"""Names a page of repositories reads at most to fill itself with names the viewer may pull (a search by a viewer
who may pull few of 300,000 names read them all, seconds a page); then it links to the next."""
TAGS_PER_PAGE = 50
RECENT_PUSHES = 10
INDEX_CREATED_CHILDREN = 8
"""An index's created time is the newest of its first this many platform images' (each a config read, cached)."""
SIZED_CHILDREN = 64
"""A tag list sizes an index of at most this many children (each read and parsed on the event loop; an index of
19,000 children, tagged fifty times, held a worker for 20 s)."""
LISTED_MANIFEST_BYTES = 256 * 1024
"""A tag list reads a manifest (or an index's child) of at most this size for its platforms and size; honest ones
are a few KB, and fifty of 4 MiB each took seconds and hundreds of MiB of a worker for one view."""
SHOWN_MANIFEST_BYTES = 512 * 1024
"""A manifest's page shows its text up to this size; a larger one (an index of thousands of entries) is linked to
for download: 18 MB of HTML held the worker's event loop for seconds."""
SHOWN_ENTRIES = 1000
"""Most entries of an index (or layers of an image) a page lists; the rest are counted."""
SHOWN_REFERRERS = 200
"""Most referrers a manifest's page lists (the referrers API pages through them all)."""
SHOWN_ANNOTATIONS, SHOWN_ANNOTATION_CHARS = 32, 512
"""Most annotations shown for a manifest or a referrer, and the characters of each value shown: forty referrers
with 4 MB of annotations each made one page of 167 MB."""
LISTED_PLATFORMS = 16
LISTED_CONFIG_BYTES = 64 * 1024
"""A tag list reads an image's config for its `created` only up to this size (honest configs are a few KB; fifty
of 4 MiB each took seconds to parse); its own page reads it up to `MAX_CONFIG_BYTES`."""
CACHED_CONFIGS, CACHED_CONFIG_BYTES = 1024, 64 * 1024
"""Configs kept per worker, and the largest kept: at most some 64 MiB of them (4,096 of up to 4 MiB each could
have taken gigabytes)."""
SEPARATOR = "/-/"
VIEWER: web.RequestKey[Viewer] = web.RequestKey("docker_registry.ui.viewer", Viewer)


def repository_url(name: str) -> str:
    return f"{PREFIX}/repositories/{quote(name)}"


def manifest_url(name: str, reference: str) -> str:
    return f"{repository_url(name)}{SEPARATOR}manifests/{quote(str(reference))}"


def blob_url(name: str, digest: str) -> str:
    return f"{repository_url(name)}{SEPARATOR}blobs/{quote(str(digest))}"


def newest(times: list[str]) -> str:
    """The latest of RFC 3339 times as written (configs differ in precision and zone), "" when none parses."""
    parsed = []
    for text in times:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            continue
        parsed.append((moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC), text))
    return max(parsed)[1] if parsed else ""


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    pushed: float
    digest: str
    media_type: str
    platforms: list[str]
    size: int | None
    created: str


def _listed_platforms(view: ManifestView) -> list[str]:
    platforms = view.platforms
    if len(platforms) <= LISTED_PLATFORMS:
        return platforms
    return [*platforms[:LISTED_PLATFORMS], f"{len(platforms) - LISTED_PLATFORMS} more"]


def _index_size(index: ManifestView, children: Mapping[str, ManifestView]) -> int | None:
    """What pulling every platform of an index downloads: its children's configs and layers, and the blobs it
    lists itself (None when a child is not in the repository, is itself an index, or the index has more children
    than a list reads: `SIZED_CHILDREN`)."""
    if len(index.children) > SIZED_CHILDREN:
        return None
    sizes = [children[c.digest].compressed_size if c.digest in children else None for c in index.children]
    sizes += [blob.size for blob in index.layers]
    return None if not sizes or None in sizes else sum(s for s in sizes if s is not None)


def _listed(media_type: str, content: bytes | None) -> ManifestView:
    """What a tag list shows of a manifest; nothing of one too large to have been read (`LISTED_MANIFEST_BYTES`)."""
    if content is None:
        return ManifestView(media_type, media_type in INDEX_TYPES)
    return read_manifest(media_type, content)


def _shown_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """The first `SHOWN_ANNOTATIONS` annotations, each value cut at `SHOWN_ANNOTATION_CHARS` characters."""
    shown = {}
    for key, value in list(annotations.items())[:SHOWN_ANNOTATIONS]:
        long = len(value) > SHOWN_ANNOTATION_CHARS
        shown[key[:SHOWN_ANNOTATION_CHARS]] = value[:SHOWN_ANNOTATION_CHARS] + (" …" if long else "")
    return shown


def _deleted(request: web.Request) -> str:
    """What the delete that led here removed, for the notice; only a well-formed tag or digest, so a crafted link
    cannot put words of its own on the page."""
    tag, digest = request.query.get("deleted_tag", ""), request.query.get("deleted_manifest", "")
    try:
        if tag:
            return f"tag {names.check_tag(tag)}"
        if digest:
            return f"manifest {names.check_digest(digest)}"
    except RegistryError:
        pass
    return ""


class UI:
    def __init__(
        self,
        config: Config,
        env: jinja2.Environment,
        signer: Signer,
        accounts: Accounts | None,
        auth_configured: bool,
        health: Callable[[], Mapping[str, bool]],
    ) -> None:
        self.config = config
        self.env = env
        self.signer = signer
        self.accounts = accounts
        self.supported = accounts is not None or not auth_configured
        self.health = health
        self.configs: BoundedCache[str, ConfigView] = BoundedCache(CACHED_CONFIGS)
        """Image configs are immutable (by digest): read each from storage once per worker."""

    # --- who is looking ----------------------------------------------------------------------------------------
    async def viewer(self, request: web.Request) -> Viewer:
        """The session cookie's user, else Basic credentials (the browser's prompt), else anonymous; a wrong
        password is refused, as the API refuses it."""
        if self.accounts is None:
            return Viewer(None, None)
        user = self.signer.session_user(request.cookies.get(SESSION_COOKIE), self.accounts.entry)
        if user is None and request.headers.get(hdrs.AUTHORIZATION, "").startswith("Basic "):
            try:
                credentials = BasicAuth.decode(request.headers[hdrs.AUTHORIZATION], encoding="utf-8")
            except ValueError:
                raise self._challenge(request) from None
            if credentials.login or credentials.password:  # empty ones are anonymous, as the API takes them
                if not await self.check_password(request, credentials.login, credentials.password):
                    raise self._challenge(request)
                user = credentials.login
        return Viewer(user, self.accounts)

    async def check_password(self, request: web.Request, user: str, password: str) -> bool:
        assert self.accounts is not None
        address = request.remote or ""
        try:
            verified = await self.accounts.check(address, user, password)
        except LoginsBlocked as blocked:  # as the API answers: when to come back
            raise web.HTTPTooManyRequests(
                text="too many failed logins from this address; try again later",
                headers={hdrs.RETRY_AFTER: str(math.ceil(blocked.seconds))},
            ) from None
        if verified:
            return True
        log.warning("failed UI login from %s for user %r", address, user[:100])
        return False

    def _challenge(self, request: web.Request) -> web.HTTPException:
        realm = 'Basic realm="docker-registry UI", charset="UTF-8"'
        return web.HTTPUnauthorized(
            text="Log in with a user of the registry.",
            headers={hdrs.WWW_AUTHENTICATE: realm},
            content_type="text/plain",
        )

    def _login_redirect(self, request: web.Request) -> web.HTTPException:
        return web.HTTPSeeOther(f"{PREFIX}/login?{urlencode({'next': request.path_qs})}")

    # --- rendering -----------------------------------------------------------------------------------------------
    def render(self, request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
        viewer: Viewer = request[VIEWER]
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None or len(cookie) > 100
        if fresh:
            cookie = self.signer.new_csrf_cookie()
        assert cookie is not None
        response = page(
            self.env,
            template,
            status,
            viewer=viewer,
            csrf_field=CSRF_FIELD,
            csrf=self.signer.csrf_token(cookie),
            prefix=PREFIX,
            repository_url=repository_url,
            manifest_url=manifest_url,
            blob_url=blob_url,
            **context,
        )
        if fresh:
            self._set_cookie(request, response, CSRF_COOKIE, cookie, None)
        return response

    def _set_cookie(
        self, request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float | None
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=f"{PREFIX}/",
            max_age=None if max_age is None else int(max_age),
            httponly=True,
            secure=request.secure or None,
            samesite="Strict",
        )

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.render(request, "error.html", status, message=message)

    async def no_such_page(self, request: web.Request) -> web.Response:
        """Any other path under the UI's: its own 404 page and headers, not the API's JSON error."""
        await self.enter(request)
        return self.error(request, 404, "No such page.")

    async def check_csrf(self, request: web.Request) -> dict[str, str]:
        """The form of a state-changing request, once its CSRF token matched and its origin (when the browser
        says) is this registry; otherwise 403."""
        origin = request.headers.get(hdrs.ORIGIN)
        # the host only: behind a TLS-terminating proxy the scheme (and a default port) may differ from ours
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-site request refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise web.HTTPForbidden(text="cross-site request refused")
        try:
            posted = await request.post()
        # not UTF-8, an unknown charset (LookupError), a multipart body without or past its boundary
        except (ValueError, LookupError, HttpProcessingError):
            raise web.HTTPBadRequest(text="the form could not be read") from None
        form = {key: str(value) for key, value in posted.items()}
        if not self.signer.csrf_valid(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            raise web.HTTPForbidden(text="the form has expired or did not come from this registry; reload the page")
        return form

    # --- middleware-like entry -------------------------------------------------------------------------------------
    async def enter(self, request: web.Request, anonymous_ok: bool = True) -> Viewer:
        if not self.supported:
            raise web.HTTPNotImplemented(
                text="The web UI needs users the registry knows: auth.htpasswd, or auth.token with the built-in "
                "token service's issue.htpasswd. With an outside token server only, it is off (see docs/ui.md)."
            )
        viewer = await self.viewer(request)
        request[VIEWER] = viewer
        if viewer.needs_login and not anonymous_ok:
            raise self._login_redirect(request)
        return viewer

    @staticmethod
    def registry(request: web.Request) -> Registry:
        return request.app[REGISTRY_KEY]

    # --- pages -----------------------------------------------------------------------------------------------------
    async def overview(self, request: web.Request) -> web.Response:
        viewer = await self.enter(request)
        store = self.registry(request).store
        inventory, pushes = await asyncio.gather(
            store.inventory(), store.read(store.sync.recent_pushes, RECENT_PUSHES * 5)
        )
        visible = [p for p in pushes if viewer.may(p.repository, PULL)][:RECENT_PUSHES]
        if viewer.needs_login and not visible and not await self._sees_any(store, viewer):
            raise self._login_redirect(request)
        health = self.health()
        return self.render(
            request,
            "overview.html",
            inventory=inventory,
            pushes=visible,
            health=sorted(health.items()),
            healthy=all(health.values()),
        )

    async def repositories(self, request: web.Request) -> web.Response:
        viewer = await self.enter(request)
        search = request.query.get("q", "").strip()[:255]
        sealed = request.query.get("from")
        after = (self.signer.unseal(sealed) if sealed else None) or request.query.get("after") or None
        store = self.registry(request).store
        found: list[str] = []
        cursor, more, scanned = after, False, 0
        batch = REPOSITORIES_PER_PAGE * 4
        while True:  # keyset pages until this page is full of repositories the viewer may pull
            names_ = await store.read(store.sync.repository_names, search or None, cursor, batch)
            for name in names_:
                if viewer.may(name, PULL):
                    if len(found) == REPOSITORIES_PER_PAGE:
                        more = True
                        break
                    found.append(name)
            if more or len(names_) < batch:
                break
            cursor = names_[-1]
            scanned += len(names_)
            if scanned >= REPOSITORIES_SCANNED:  # a page of few visible names among many: the next page goes on
                more = True
                break
            batch = min(batch * 4, 2000, REPOSITORIES_SCANNED - scanned)
        if viewer.needs_login and not found and not more and not search and not after:
            raise self._login_redirect(request)
        summaries: dict[str, RepositorySummary] = await store.read(store.sync.repository_summaries, found)
        rows = [summaries.get(name, RepositorySummary(name, 0, None, 0)) for name in found]
        next_url = None
        if more and len(found) == REPOSITORIES_PER_PAGE:
            next_url = f"{PREFIX}/repositories?{urlencode({'q': search, 'after': found[-1]})}"
        elif more and cursor is not None:  # stopped among names the viewer may not see: the place is sealed
            next_url = f"{PREFIX}/repositories?{urlencode({'q': search, 'from': self.signer.seal(cursor)})}"
        return self.render(request, "repositories.html", rows=rows, search=search, after=after, next_url=next_url)

    async def repository_path(self, request: web.Request) -> web.StreamResponse:
        """`/ui/repositories/<name>[/-/...]`: the repository, one of its manifests, or the delete confirmation."""
        raw = request.match_info["path"]
        name, _, rest = raw.partition(SEPARATOR)
        viewer = await self.enter(request)
        if not names.is_name(name):
            return self.error(request, 404, "No such repository.")
        if not viewer.may(name, PULL):  # not shown, as if absent; anonymous viewers are asked to log in
            if viewer.needs_login and rest.startswith("blobs/"):  # a download: the browser's prompt, or curl -u
                raise self._challenge(request)
            if viewer.needs_login:
                raise self._login_redirect(request)
            return self.error(request, 404, "No such repository.")
        if not rest:
            if request.method not in ("GET", "HEAD"):  # a HEAD gets the page's headers (aiohttp leaves out the body)
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
            return await self._repository(request, viewer, name)
        if rest.startswith(("manifests/", "blobs/")) and request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if rest.startswith("manifests/"):
            return await self._manifest(request, viewer, name, rest.removeprefix("manifests/"))
        if rest.startswith("blobs/"):
            return await self._blob(request, name, rest.removeprefix("blobs/"))
        if rest == "delete":
            return await self._delete(request, viewer, name)
        return self.error(request, 404, "No such page.")

    @staticmethod
    async def _sees_any(store: AsyncMetadataStore, viewer: Viewer) -> bool:
        """Whether the viewer may pull any repository (among the first `REPOSITORIES_SCANNED`): an anonymous one
        who may is shown the overview, not sent to log in because the latest pushes were all elsewhere. The rules
        answer first: on a private registry no name is read for an anonymous visit."""
        if not viewer.may_somewhere(PULL):
            return False
        after, scanned = None, 0
        while scanned < REPOSITORIES_SCANNED:
            names = await store.read(store.sync.repository_names, None, after, REPOSITORIES_READ)
            if any(viewer.may(name, PULL) for name in names):
                return True
            if len(names) < REPOSITORIES_READ:
                return False
            scanned, after = scanned + len(names), names[-1]
        return False

    async def _repository(self, request: web.Request, viewer: Viewer, name: str) -> web.Response:
        sort: TagOrder = "name" if request.query.get("sort") == "name" else "pushed"
        page_text = request.query.get("page", "1")
        number = int(page_text) if page_text.isascii() and page_text.isdigit() and 0 < len(page_text) < 7 else 1
        number = max(number, 1)
        store = self.registry(request).store
        offset = (number - 1) * TAGS_PER_PAGE
        found = await store.read(store.sync.tag_page, name, sort, offset, TAGS_PER_PAGE, LISTED_MANIFEST_BYTES)
        if found is None:
            return self.error(request, 404, "No such repository.")
        total, records = found
        # each manifest read once, however many of the page's tags name it
        by_digest = {str(r.digest): _listed(r.media_type, r.content) for r in records}
        distinct = list(by_digest.values())
        configs = await asyncio.gather(*(self._config(request, name, v, LISTED_CONFIG_BYTES) for v in distinct))
        children = sorted(
            {child.digest for view in distinct if len(view.children) <= SIZED_CHILDREN for child in view.children}
        )
        child_views = {
            digest: read_manifest(*found)
            for digest, found in (
                await store.read(store.sync.manifest_contents, name, children, LISTED_MANIFEST_BYTES)
            ).items()
        }
        created = await asyncio.gather(
            *(self._index_created(request, name, v, child_views, LISTED_CONFIG_BYTES) for v in distinct)
        )
        facts = {
            digest: (
                _listed_platforms(view),
                _index_size(view, child_views) if view.is_index else view.compressed_size,
                made or (config.created if config else ""),
            )
            for (digest, view), config, made in zip(by_digest.items(), configs, created, strict=True)
        }
        rows = [TagRow(r.name, r.pushed, str(r.digest), r.media_type, *facts[str(r.digest)]) for r in records]
        return self.render(
            request,
            "repository.html",
            name=name,
            host=request.host,
            rows=rows,
            total=total,
            sort=sort,
            page=number,
            pages=max(1, math.ceil(total / TAGS_PER_PAGE)),
            may_delete=self._may_delete(viewer, name),
            deleted=_deleted(request),
        )

    async def _config(
        self, request: web.Request, repository: str, view: ManifestView, limit: int = MAX_CONFIG_BYTES
    ) -> ConfigView | None:
        """The image config a manifest names, read from storage once per worker (a small one); None when absent or
        larger than `limit`. Only one the repository links is shown, cached or not: a manifest cached from an
        upstream may name any digest, another repository's private config's too."""
        if view.config is None or view.config.size > limit:
            return None
        registry = self.registry(request)
        try:
            digest = parse_digest(view.config.digest)
            await registry.blob(repository, digest, pulled=False)
        except (RegistryError, UnspecifiedError, OSError):
            return None
        cached = self.configs.get(view.config.digest)
        if cached is not None:
            return cached
        try:
            chunks = [chunk async for chunk in registry.blob_stream(digest, 0, view.config.size)]
        except (RegistryError, UnspecifiedError, OSError):
            return None
        config = read_config(b"".join(chunks))
        if view.config.size <= CACHED_CONFIG_BYTES:
            self.configs.put(view.config.digest, config)
        return config

    async def _index_created(
        self,
        request: web.Request,
        repository: str,
        index: ManifestView,
        children: Mapping[str, ManifestView],
        limit: int = MAX_CONFIG_BYTES,
    ) -> str:
        """When the newest platform image of an index was built, from its first children's configs of up to `limit`
        bytes ("" for an image, whose own config says it)."""
        images = [children[c.digest] for c in index.children[:INDEX_CREATED_CHILDREN] if c.digest in children]
        configs = await asyncio.gather(*(self._config(request, repository, image, limit) for image in images))
        return newest([config.created for config in configs if config is not None and config.created])

    async def _blob(self, request: web.Request, name: str, digest_text: str) -> web.StreamResponse:
        try:
            digest = names.check_digest(digest_text)
            return await download(request, self.registry(request), name, digest)
        except (RegistryError, exceptions.FileNotFoundError):
            return self.error(request, 404, "No such blob in this repository.")

    def _may_delete(self, viewer: Viewer, name: str) -> bool:
        storage = self.config.storage
        return storage.delete_enabled and not storage.readonly and viewer.may(name, DELETE)

    async def _manifest(self, request: web.Request, viewer: Viewer, name: str, reference: str) -> web.Response:
        registry = self.registry(request)
        try:
            digest, stored = await registry.get_manifest(name, names.check_reference(reference), pulled=False)
        except RegistryError:
            return self.error(request, 404, "No such manifest.")
        shown_whole = len(stored.content) <= SHOWN_MANIFEST_BYTES
        view = read_manifest(stored.media_type, stored.content, pretty=shown_whole)
        segments = linked_pretty(view) if shown_whole else None
        entries = len(view.children) + len(view.layers)
        view.children = view.children[:SHOWN_ENTRIES]
        view.layers = view.layers[: SHOWN_ENTRIES - len(view.children)]
        view.annotations = _shown_annotations(view.annotations)
        store = registry.store
        children = [child.digest for child in view.children[:INDEX_CREATED_CHILDREN]]
        config, referrers, tags, child_contents = await asyncio.gather(
            self._config(request, name, view),
            store.referrers(name, digest, None, None, SHOWN_REFERRERS + 1),
            store.read(store.sync.tags_of_manifest, name, digest),
            store.read(store.sync.manifest_contents, name, children, LISTED_MANIFEST_BYTES),
        )
        child_views = {child: read_manifest(*found) for child, found in child_contents.items()}
        created = await self._index_created(request, name, view, child_views)
        grouped: dict[str, list[Any]] = defaultdict(list)
        for referrer in referrers[:SHOWN_REFERRERS]:
            shown = dataclasses.replace(referrer, annotations=_shown_annotations(referrer.annotations or {}))
            grouped[referrer.artifact_type or referrer.media_type].append(shown)
        return self.render(
            request,
            "image.html",
            name=name,
            reference=reference,
            digest=str(digest),
            host=request.host,
            view=view,
            segments=segments,
            manifest_size=len(stored.content),
            unlisted=entries - len(view.children) - len(view.layers),
            config=config,
            created=created or (config.created if config else ""),
            referrers=sorted(grouped.items()),
            more_referrers=len(referrers) > SHOWN_REFERRERS,
            tags=tags,
            may_delete=self._may_delete(viewer, name),
        )

    async def _delete(self, request: web.Request, viewer: Viewer, name: str) -> web.StreamResponse:
        if not self._may_delete(viewer, name):
            if request.method == "POST":
                await self.check_csrf(request)
            return self.error(request, 403, "You may not delete in this repository (or deletes are disabled).")
        if request.method == "GET":
            tag, digest = request.query.get("tag", ""), request.query.get("digest", "")
            try:  # a well-formed tag or digest only: a crafted link cannot put words of its own on the page
                tag, digest = names.check_tag(tag) if tag else "", str(names.check_digest(digest)) if digest else ""
            except RegistryError:
                return self.error(request, 404, "No such tag or manifest.")
            return self.render(request, "delete.html", name=name, tag=tag, digest=digest)
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        form = await self.check_csrf(request)
        tag, digest_text = form.get("tag", ""), form.get("digest", "")
        registry = self.registry(request)
        try:
            if tag:
                await registry.delete_manifest(name, tag)
            elif digest_text:
                await registry.delete_manifest(name, parse_digest(digest_text))
            else:
                return self.error(request, 400, "Say which tag or manifest to delete.")
        except (RegistryError, UnspecifiedError):
            return self.error(request, 404, "No such tag or manifest (deleted already?).")
        log.info("UI delete in %s of %s by %s", name, tag or digest_text, viewer.user or "anonymous")
        done = {"deleted_tag": tag} if tag else {"deleted_manifest": digest_text}
        raise web.HTTPSeeOther(f"{repository_url(name)}?{urlencode(done)}")

    # --- login -----------------------------------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.accounts is None:
            raise web.HTTPSeeOther(f"{PREFIX}/")
        request[VIEWER] = Viewer(None, self.accounts)
        target = request.query.get("next", "")
        if not target.startswith(f"{PREFIX}/") or _UNSAFE_NEXT.search(unquote(target.split("?", 1)[0])):
            target = f"{PREFIX}/"
        if request.method in ("GET", "HEAD"):
            return self.render(request, "login.html", next=target, failed=False)
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        form = await self.check_csrf(request)
        user, password = form.get("username", ""), form.get("password", "")
        if not await self.check_password(request, user, password):
            return self.render(request, "login.html", 401, next=target, failed=True)
        entry = self.accounts.entry(user)
        if entry is None:  # removed between the check and now
            return self.render(request, "login.html", 401, next=target, failed=True)
        response = web.HTTPSeeOther(target)
        self._set_cookie(request, response, SESSION_COOKIE, self.signer.session(user, entry), self.signer.lifetime)
        raise response

    async def login_basic(self, request: web.Request) -> web.StreamResponse:
        """The browser's own login prompt (Basic), for those who prefer it to the form."""
        viewer = await self.enter(request)
        if viewer.user is None and self.accounts is not None:
            raise self._challenge(request)
        raise web.HTTPSeeOther(f"{PREFIX}/")

    async def logout(self, request: web.Request) -> web.StreamResponse:
        request[VIEWER] = Viewer(None, self.accounts)
        await self.check_csrf(request)
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(SESSION_COOKIE, path=f"{PREFIX}/")
        raise response
