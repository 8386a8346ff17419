"""Jinja2 templates with autoescaping on for every template (so every name, tag and label is text, never markup),
the filters they use, and the headers every UI response carries: a strict Content-Security-Policy (scripts and
styles only from the registry, no inline code, no framing) and no caching of pages that depend on the login."""

from __future__ import annotations

import datetime
import re
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


HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
r"""Characters that show nothing or turn the text around them: controls, format characters (zero-width spaces
and joiners, bidirectional marks, overrides and isolates, soft hyphens, tag characters) and line and paragraph
separators: `\u202eevil=1` showed as `1=live`, and a zero-width space made a label key look like another."""
SHOWN_CONTROLS = frozenset("\t\n\r")
"""Controls that lay out a multi-line value (a history step's command) and hide nothing."""
INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")
"""What Unicode calls default-ignorable yet Python calls printable: the combining grapheme joiner, variation
selectors, Hangul fillers, Khmer inherent vowels. Each shows nothing after a character, so
`org.opencontainers.image.source` followed by one looked exactly like the real label key."""


def _hidden(character: str) -> bool:
    if character in SHOWN_CONTROLS:
        return False
    return unicodedata.category(character) in HIDDEN_CATEGORIES or INVISIBLE.match(character) is not None


def _written_out(character: str) -> str:
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def reveal(value: Any) -> Any:
    r"""Every value a page shows, with the hidden characters of a pushed text written out as `\uXXXX` (the
    environment's `finalize`, before escaping; the templates' own markup has none). Only a text that is not all
    printable, or holds one of the few invisible characters Python calls printable, is looked at character by
    character."""
    if (
        isinstance(value, str)
        and not isinstance(value, markupsafe.Markup)
        and (not value.isprintable() or INVISIBLE.search(value))
    ):
        return "".join(_written_out(c) if _hidden(c) else c for c in value)
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
