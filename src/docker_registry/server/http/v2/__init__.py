"""The v2 API (OCI distribution-spec v1.1, Docker Registry HTTP API v2): its route table, one module a resource, as
CNCF Distribution splits its handlers."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from ..routing import NAME, BodyCheck, Handler, Route, dispatch, expect_continue, route
from . import blobs, catalog, manifests, referrers, uploads

ROUTES: list[Route] = [
    # Pulls first: they are most of the traffic. No path matches two of these patterns (a blob digest is never
    # "uploads"), so the order only decides how soon a request finds its route.
    route(
        "manifest",
        rf"^/v2/{NAME}/manifests/(?P<reference>[^/]+)$",
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    route(
        "blob",
        rf"^/v2/{NAME}/blobs/(?P<digest>(?!uploads$)[^/]+)$",
        {"GET": blobs.get_blob, "HEAD": blobs.head_blob, "DELETE": blobs.delete_blob},
    ),
    route("base", r"^/v2/?$", {"GET": catalog.base, "HEAD": catalog.base}),
    route("catalog", r"^/v2/_catalog$", {"GET": catalog.catalog, "HEAD": catalog.catalog}),
    route("tags", rf"^/v2/{NAME}/tags/list$", {"GET": catalog.tags_list, "HEAD": catalog.tags_list}),
    route("blob-upload", rf"^/v2/{NAME}/blobs/uploads/?$", {"POST": uploads.start_upload}),
    route(
        "blob-upload-chunk",
        rf"^/v2/{NAME}/blobs/uploads/(?P<uuid>[^/]+)$",
        {
            "GET": uploads.upload_status,
            "HEAD": uploads.upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.put_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    route(
        "referrers",
        rf"^/v2/{NAME}/referrers/(?P<digest>[^/]+)$",
        {"GET": referrers.referrers, "HEAD": referrers.referrers},
    ),
]


BODY_CHECKS: dict[Handler, BodyCheck] = {
    manifests.put_manifest: manifests.before_body,
    uploads.start_upload: uploads.before_new_upload,
    uploads.patch_upload: uploads.before_chunk,
    uploads.put_upload: uploads.before_chunk,
}


def add_routes(app: web.Application) -> None:
    handler = partial(dispatch, ROUTES)
    expect = expect_continue(ROUTES, BODY_CHECKS)
    app.router.add_route("*", "/v2", handler, expect_handler=expect)
    app.router.add_route("*", "/v2/{tail:.*}", handler, expect_handler=expect)
