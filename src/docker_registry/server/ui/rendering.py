"""Jinja2 templates with autoescaping on for every template (so every name, tag and label is text, never markup),
the filters they use, and the headers every UI response carries: a strict Content-Security-Policy (scripts and
styles only from the registry, no inline code, no framing) and no caching of pages that depend on the login."""

from __future__ import annotations

import datetime
import unicodedata
from typing import Any

import jinja2
import markupsafe
from aiohttp import web

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def timestamp(value: float | None) -> str:
    if value is None:
        return "—"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_digest(digest: str) -> str:
    algorithm, _, hexpart = str(digest).partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else str(digest)


HIDDEN_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})
r"""Characters that show nothing or turn the text around them: format characters (zero-width spaces and joiners,
bidirectional marks, overrides and isolates, soft hyphens, tag characters) and line and paragraph separators:
`\u202eevil=1` showed as `1=live`, and a zero-width space made a label key look like another."""


def reveal(value: Any) -> Any:
    r"""Every value a page shows, with the hidden characters of a pushed text written out as `\uXXXX` (the
    environment's `finalize`, before escaping; the templates' own markup has none). Only a text that is not all
    printable is looked at character by character."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup) and not value.isprintable():
        return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in value)
    return value


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("docker_registry.server.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=reveal,
    )
    env.filters.update(size=human_size, time=timestamp, short=short_digest)
    return env


def page(env: jinja2.Environment, template: str, status: int = 200, **context: Any) -> web.Response:
    response = web.Response(
        text=env.get_template(template).render(**context), status=status, content_type="text/html", charset="utf-8"
    )
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response
