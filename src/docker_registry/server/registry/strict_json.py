"""JSON documents from clients, read strictly: what Python's reader takes beyond JSON is refused, so that nothing is
stored that clients written in Go, or the metadata database, cannot take back."""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn


def loads(raw: bytes) -> Any:
    """The document in `raw`; `ValueError` saying why when it is not UTF-8 (BOM-less: `json.loads(bytes)` would also
    take UTF-16 and UTF-32), not JSON, holds `NaN` or `Infinity` (Python's extensions) or a number beyond a double's
    range or 64 bits, is nested deeper than the reader's stack, or escapes a lone UTF-16 surrogate (`"\\ud800"`:
    no UTF-8 encodes it, so no database column or UTF-8 writer takes the string)."""
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded)
        if "\\u" in text:  # only an escape can make a lone surrogate
            json.dumps(document, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone UTF-16 surrogate") from None
    return document


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _bounded(text: str) -> int:
    """An integer beyond 64 bits fits no number type of a Go client (a 400-digit one was taken whole)."""
    if len(text.lstrip("-")) > 20 or not -(2**63) <= (value := int(text)) < 2**64:
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _finite(text: str) -> float:
    """A number too large for a double (`1e400`) is read as infinity, which a document written back (v1's configs,
    bridged to v2) would hold as `Infinity`: refused too."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value
