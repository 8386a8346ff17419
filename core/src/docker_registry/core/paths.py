"""Validation of driver paths and the content-addressed layout shared by every driver.

`driver.Base` calls `check_path` (or `check_prefix`) in every public method before the driver's implementation
runs, so a hostile repository name or digest can never reach outside the driver's root, whatever the backend's
own path rules are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .exceptions import WrongArgumentsError

__all__ = ["check_path", "check_prefix", "immediate_children", "join"]

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
"""A backslash or a control character (one regex search: this runs on every driver call)."""


def check_path(path: str) -> str:
    """Return `path` if it is a safe relative object path, else raise `WrongArgumentsError`.

    Safe means: a non-empty str, slash-separated, with no empty, `.` or `..` segment, no leading slash,
    no backslash and no NUL or other control character.
    """
    if not isinstance(path, str) or not path:
        raise WrongArgumentsError(f"invalid path {path!r}: must be a non-empty string")
    if _FORBIDDEN.search(path):
        raise WrongArgumentsError(f"invalid path {path!r}: backslash or control character")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise WrongArgumentsError(f"invalid path {path!r}: empty, '.' or '..' segment")
    return path


def check_prefix(path: str) -> str:
    """Like `check_path`, but the empty string (the driver root) is allowed; a trailing slash is dropped."""
    if path == "":
        return path
    if isinstance(path, str) and path.endswith("/") and not path.endswith("//"):
        path = path[:-1]
    return check_path(path)


def join(*parts: str) -> str:
    """Join path parts with slashes, skipping empty parts (the root)."""
    return "/".join(p for p in parts if p)


def immediate_children(keys: Iterable[str], prefix: str) -> list[str]:
    """Sorted immediate children of `prefix` among the object keys of a flat key space.

    Object stores and in-memory maps have no directories; this derives them from the keys, the way
    `Base.list_directory` must report them (full relative paths, one entry per child directory).
    """
    start = f"{prefix}/" if prefix else ""
    found = {start + key[len(start) :].split("/", 1)[0] for key in keys if key.startswith(start) and key != start}
    return sorted(found)
