"""Grammar of repository names, tags and references (OCI distribution-spec, "Pulling manifests")."""

from __future__ import annotations

import re

from docker_registry.core.digest import Digest, DigestError, parse_digest

from .errors import DIGEST_INVALID, NAME_INVALID, TAG_INVALID, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# matched whole (`fullmatch`): `$` also matches before a final newline, and a tag is unquoted from the path
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
NAME_MAX_LENGTH = 255


def is_name(name: str) -> bool:
    return len(name) <= NAME_MAX_LENGTH and _NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    if not is_name(name):
        raise RegistryError(NAME_INVALID, {"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise RegistryError(TAG_INVALID, {"tag": tag[:300]}, message="invalid tag")
    return tag


def check_digest(value: str) -> Digest:
    try:
        return parse_digest(value)
    except DigestError as e:
        raise RegistryError(DIGEST_INVALID, {"digest": value[:300]}, message=str(e)) from None


def is_digest(reference: str) -> bool:
    """A reference with a colon can only be a digest: tags never contain one."""
    return ":" in reference


def check_reference(reference: str) -> str | Digest:
    """A tag (returned as the string it is) or a digest (returned parsed)."""
    if is_digest(reference):
        return check_digest(reference)
    return check_tag(reference)


def legacy_repository(name: str) -> str:
    """The repository a v1 path names: a name without a namespace is `library/<name>`, as the original registry
    stored it. The v1 API and the auth gate both apply it, so rules are checked on the repository written."""
    return name if "/" in name else check_name(f"library/{name}")
