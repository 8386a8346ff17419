"""What each route of the v2 API needs: the action on the route's repository, or only a known caller."""

from __future__ import annotations

import hmac

from ..http.routing import Handler
from ..http.v2 import blobs, catalog, manifests, referrers, uploads
from .rules import DELETE, PULL, PUSH

LOGIN = "login"
"""`/v2/`: any authenticated user (the check clients make before they send credentials)."""
CATALOG = "catalog"
"""`/v2/_catalog`: any caller who may pull something; the list is filtered to what they may pull."""

OPEN = "open"
"""Anyone, with or without credentials: the v1 ping and sign-up, as the original served them."""

ACTIONS: dict[Handler, str] = {
    manifests.get_manifest: PULL,
    manifests.put_manifest: PUSH,
    manifests.delete_manifest: DELETE,
    blobs.get_blob: PULL,
    blobs.head_blob: PULL,
    blobs.delete_blob: DELETE,
    catalog.base: LOGIN,
    catalog.catalog: CATALOG,
    catalog.tags_list: PULL,
    referrers.referrers: PULL,
    uploads.start_upload: PUSH,
    uploads.upload_status: PUSH,
    uploads.patch_upload: PUSH,
    uploads.put_upload: PUSH,
    uploads.cancel_upload: PUSH,
}

SESSION_HANDLERS = frozenset({uploads.upload_status, uploads.patch_upload, uploads.put_upload, uploads.cancel_upload})
"""Routes on an upload session by its id: only the user who began it may use them."""


def required(handler: Handler) -> str:
    """A route missing here is refused to everyone (a new route must be given its action)."""
    return ACTIONS.get(handler, "")


def same_owner(owner: str | None, user: str | None) -> bool:
    """Whether `user` began the upload session `owner` began (None: anonymous), compared in constant time."""
    if owner is None or user is None:
        return owner is None and user is None
    return hmac.compare_digest(owner.encode(), user.encode())


V1_ACTIONS = {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "POST": PUSH, "DELETE": DELETE}
"""The legacy v1 API (its handlers live in a feature this one may not import, so its routes are told by path and
method): reads pull, writes push, deletes delete. Image routes name no repository: see `Auth.guard`."""


def required_v1(method: str, path: str) -> str:
    if path in ("/_ping", "/v1/_ping"):
        return OPEN
    if path.startswith("/v1/users"):
        return OPEN if method == "POST" else LOGIN
    if path == "/v1/search":
        return CATALOG
    return V1_ACTIONS.get(method, "")
