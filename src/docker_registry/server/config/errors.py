"""Pydantic's validation errors as the operator reads them: the dotted key first, then what was wrong with it."""

from __future__ import annotations

from pydantic import ValidationError

from .environment import Overrides


def describe(error: ValidationError, overrides: Overrides) -> str:
    """One line per problem, `http.workers (from REGISTRY_HTTP_WORKERS): expected a positive integer, got 'x'`.

    The value types word their own messages (`values.py`); only unknown keys are pydantic's `extra_forbidden`.
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
        if item["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown {'section' if len(path) == 1 else 'key'}")
        else:
            lines.append(f"{where}: {item['msg']}")
    return "\n".join(dict.fromkeys(lines))
