"""Pydantic's validation errors as the operator reads them: the dotted key first, then what was wrong with it."""

from __future__ import annotations

from pydantic import ValidationError

from .environment import Overrides
from .values import SECRET_KEY, hide_url_secrets

PYDANTIC_TYPES = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "string_type": "a string",
    "bool_type": "true or false",
}
"""The checks pydantic makes itself (`list[...]` keys), worded as the value types word theirs."""


def describe(error: ValidationError, overrides: Overrides) -> str:
    """One line per problem, `http.workers (from REGISTRY_HTTP_WORKERS): expected a positive integer, got 'x'`.

    The value types word their own messages (`values.py`); pydantic's own (unknown keys, required keys, a list
    that is not one) are worded here the same way.
    A check across keys raised at the top (loc empty) names its keys itself.
    """
    lines: list[str] = []
    for item in error.errors(include_url=False):
        path = tuple(str(part) for part in item["loc"] if part != "[key]")  # "[key]": a mapping's key was bad
        if not path:
            lines.append(item["msg"])
            continue
        where = ".".join(path)
        variable = overrides.variable_for(path)
        if variable:
            where += f" (from {variable})"
        got = (item.get("ctx") or {}).get("got")
        if got is not None and SECRET_KEY.search(path[-1]):  # `secret: 12345`: the message must not print it
            kind = type(item["input"]).__name__
            item["msg"] = item["msg"].replace(f"got {got}", f"got a value of type {kind} (not shown)")
        elif got is not None and isinstance(item["input"], str) and "://" in item["input"]:
            # a URL refused (a webhook's, a check's, an upstream's): shown without its password and query values
            item["msg"] = item["msg"].replace(f"got {got}", f"got {hide_url_secrets(item['input'])!r}")
        if item["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown {'section' if len(path) == 1 else 'key'}")
        elif item["type"] == "missing":  # pydantic's "Field required"
            lines.append(f"{where}: required, missing")
        elif item["type"] in PYDANTIC_TYPES:  # a container type of the schema's own (a list), in pydantic's words
            lines.append(f"{where}: expected {PYDANTIC_TYPES[item['type']]}, got {item['input']!r}")
        else:
            lines.append(f"{where}: {item['msg']}")
    return "\n".join(dict.fromkeys(lines))
