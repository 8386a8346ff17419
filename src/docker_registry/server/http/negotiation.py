"""Content negotiation of manifest GETs over `Accept`, as CNCF Distribution does it.

A client that lists the manifest types it understands must not be handed another one it would misparse (an OCI
index given to a client that only reads Docker image manifests). Distribution answers such a pull, by tag or by
digest, with 404 MANIFEST_UNKNOWN, "... found, but accept header does not support ..."; so does this registry, but
for a Docker manifest list asked for by tag, which both serve as the list's linux/amd64 image
(`Registry.default_platform`; Distribution also serves the list itself by digest). Unlike Distribution, `*/*`
and `type/*` accept anything (containerd sends `*/*`), types compare case-insensitively, and `q=0` excludes a type;
other quality values do not matter, since the stored manifest exists in one type only.
"""

from __future__ import annotations

from collections.abc import Iterable


def _accepted_types(headers: Iterable[str]) -> list[str]:
    """The media ranges of every Accept header (several headers, comma-separated lists), without parameters."""
    types = []
    for header in headers:
        for entry in header.split(","):
            media_range, *parameters = (part.strip() for part in entry.split(";"))
            if not media_range:
                continue
            if any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parameters):
                continue
            types.append(media_range.lower())
    return types


def accepts(headers: Iterable[str], media_type: str) -> bool:
    """Whether a response of `media_type` suits the request's Accept headers; no Accept at all takes anything."""
    headers = list(headers)
    if not any(h.strip() for h in headers):
        return True
    main = media_type.split("/", 1)[0].lower()
    return any(t in ("*/*", f"{main}/*", media_type.lower()) for t in _accepted_types(headers))
