"""The value types of the schema's keys: each checks one value and says what it expected in the operator's terms.

Each type is `Annotated[<python type>, PlainValidator(...)]`: the plain validator replaces pydantic's own checks,
so a file's `workers: true` or `enabled: 1` is refused (YAML already typed the value; nothing is coerced) and
every message reads `expected ..., got ...` instead of pydantic's wording.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import BeforeValidator, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError
from yarl import URL

ERROR_TYPE = "config"
"""The pydantic error type of every message written here; `errors.py` shows these messages as they are."""


def invalid(expected: str, value: object) -> PydanticCustomError:
    """`expected <expected>, got <value>`: the value goes in as context so braces in it are not a template."""
    return PydanticCustomError(ERROR_TYPE, "expected {expected}, got {got}", {"expected": expected, "got": repr(value)})


def problem(message: str) -> PydanticCustomError:
    """A message that is not about the value's type (a bad combination, a refused feature)."""
    return PydanticCustomError(ERROR_TYPE, message)


# --- addresses and URLs (also used outside the configuration) -----------------------------------------------------


def split_addr(addr: str) -> tuple[str | None, int]:
    """ "host:port", "[v6]:port" or ":port" (every interface) -> (host or None, port); ValueError if malformed."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise ValueError("expected host:port (or :port for every interface) with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif ":" in host or any(c.isspace() for c in host):
        raise ValueError("write an IPv6 host in brackets, e.g. [::1]:5000")
    return (host or None), int(port_text)


SECRET_PARAMETER = re.compile(r"passw|secret|token|key|auth|credential|signature|session", re.IGNORECASE)
"""Query parameters whose value is a secret: libpq's `password`/`sslpassword`, a webhook's `token` or `key`, a
presigned URL's `X-Amz-Signature`, a client's `?access_token=`: masked in `config` output and in every log."""
SECRET_KEY = re.compile(r"secret|passw|token|accesskey|accountkey|credential", re.IGNORECASE)
"""Configuration keys whose value is a secret, known by name where no schema marks them (a driver's options) and
for error messages (a wrong one is described by its type)."""


def http_url(value: Any, expected: str = "an http:// or https:// URL") -> SplitResult:
    """`value` split, if it is an http:// or https:// URL the registry can request, port and all; `invalid`
    otherwise. A port out of range or not a number passed a look at the scheme and host, and then stopped the
    worker that built the request at start (a webhook, a health check), with a traceback."""
    if not isinstance(value, str):
        raise invalid(expected, value)
    try:
        parts = urlsplit(value)
        if parts.port == 0:  # reading the port raises for one out of range or not a number
            raise ValueError("port 0")
        URL(value)
    except ValueError:
        raise invalid(expected, value) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(expected, value)
    return parts


def hide_password(url: str) -> str:
    """A URL fit for logs and `config` output: the password of its user part and the values of its secret-looking
    query parameters (`postgresql://u@h/db?password=...`, `https://hooks.example.com/x?token=...`) masked."""
    url = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    head, mark, query = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = query.partition("#")
    pairs = [
        f"{key}=***" if sep and SECRET_PARAMETER.search(key) else f"{key}{sep}{value}"
        for key, sep, value in (pair.partition("=") for pair in query.split("&"))
    ]
    return f"{head}?{'&'.join(pairs)}{hash_mark}{fragment}"


def hide_url_secrets(url: str) -> str:
    """A webhook's or a check's URL fit for `config` output: its password and the values of its query (a
    receiver's `?token=`) masked."""
    return re.sub(r"([?&][^=&#]*)=[^&#]*", r"\1=***", hide_password(url))


def hide_header_values(headers: Any) -> Any:
    """Headers sent to a receiver or a checked service often carry credentials (`Authorization`): names shown,
    values masked."""
    return {name: ["***"] for name in headers}


def _http_url_text(value: Any) -> str:
    http_url(value)
    return str(value)


HTTPURL = Annotated[str, PlainValidator(_http_url_text)]


# --- checks --------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise invalid("a non-empty string", value)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid("true or false", value)
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("a positive integer", value)
    return value


DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_DURATION_PART = r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs|μs|ns)"


def _duration(value: Any) -> float:
    """Seconds, or a Go duration as Distribution writes them ("30s", "1m30s", "500ms")."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and re.fullmatch(f"(?:{_DURATION_PART})+", value):
        return sum(float(number) * DURATION_UNITS[unit] for number, unit in re.findall(_DURATION_PART, value))
    raise invalid('a duration in seconds or like "30s", "1m30s"', value)


def _go_duration(seconds: float) -> str:
    """Seconds as a duration `_duration` reads back exactly: "30s", "0.5s", "0.00001s" (never "1e-05s")."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _address(value: Any) -> str:
    addr = _text(value)
    try:
        split_addr(addr)
    except ValueError as exc:
        raise PydanticCustomError(ERROR_TYPE, "{reason}, got {got}", {"reason": str(exc), "got": repr(addr)}) from None
    return addr


def _tcp(value: Any) -> str:
    if value != "tcp":
        raise invalid('"tcp" (unix sockets are not supported yet)', value)
    return "tcp"


def _absolute_path(value: Any) -> str:
    """Relative paths are taken from the current directory, once, so workers and `config` output agree."""
    return os.path.abspath(os.path.expanduser(_text(value)))


def absolute_path(value: Any) -> str:
    return _absolute_path(value)


def _directory(value: Any) -> str:
    """A directory that is created if missing; a file (or anything not a directory) already there is refused here,
    as a configuration error naming the key, rather than when `serve` tries to create the directory."""
    path = _absolute_path(value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise PydanticCustomError(ERROR_TYPE, "{path} exists and is not a directory", {"path": repr(path)})
    return path


LOG_LEVELS = {
    "error": "error",
    "fatal": "error",
    "panic": "error",
    "warn": "warn",
    "warning": "warn",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}
"""Distribution's (logrus) level names, folded onto the four we log at."""


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise invalid("one of error, warn, info, debug", value)
    return LOG_LEVELS[value.lower()]


def _log_formatter(value: Any) -> str:
    if value not in ("text", "json", "logfmt"):
        raise invalid("text, json or logfmt", value)
    return str(value)


def _url_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "?# ") or len(value) > 200:
        raise invalid("a URL path starting with /, without a query", value)
    return value


def _tls_version(value: Any) -> str:
    if value not in ("tls1.2", "tls1.3"):
        raise invalid("tls1.2 or tls1.3", value)
    return str(value)


def _database_url(value: Any) -> str:
    url = _text(value)
    if "://" not in url:
        raise invalid("an SQLAlchemy URL such as postgresql://host/db", value)
    return url


def _version(value: Any) -> str:
    """YAML reads `version: 0.1` as a float: compare its text."""
    if str(value) != "0.1":
        raise invalid('"0.1" (the only configuration version)', value)
    return "0.1"


def _mapping(value: Any) -> dict[Any, Any]:
    """A mapping; an empty section (`key:` with nothing under it) is YAML's None and means an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("a mapping", value)
    return value


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", value):
        raise problem("not a valid header name")
    return value


def _header_values(value: Any) -> list[str]:
    """One value or a list of them; each is text on one line (a newline would split the response header)."""
    values = [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value
    if not isinstance(values, list) or not values:
        raise invalid("a list of values", value)
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float) or re.search(r"[\r\n]", str(item)):
            raise invalid("header values as text on one line", item)
    return [str(item) for item in values]


Text = Annotated[str, PlainValidator(_text)]
Bool = Annotated[bool, PlainValidator(_bool)]
PositiveInt = Annotated[int, PlainValidator(_positive_int)]


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid("an integer of 0 or more", value)
    return value


NonNegativeInt = Annotated[int, PlainValidator(_non_negative_int)]
Duration = Annotated[float, PlainValidator(_duration), PlainSerializer(_go_duration)]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}
_SPACE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(%|[a-z]*)", re.IGNORECASE)


def _space(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    match = _SPACE.fullmatch(text)
    if (
        match is None
        or (match[2] != "%" and match[2].lower() not in _SIZE_UNITS)
        or (match[2] == "%" and float(match[1]) >= 100)
    ):
        raise invalid('a size such as "2GiB" or "500MB", or a percentage below 100 such as "5%"', value)
    return text


def space_floor(spec: str, total: int) -> int:
    """Bytes a `Space` setting keeps free on a file system of `total` bytes."""
    match = _SPACE.fullmatch(spec)
    assert match is not None  # validated by `Space`
    if match[2] == "%":
        return int(total * float(match[1]) / 100)
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


Space = Annotated[str, PlainValidator(_space)]


def _umask(value: Any) -> int:
    """Octal digits, as the shell's `umask` reads them: `0027`, `"0027"`, `027` and `"27"` are all 0o027 (the
    configuration's YAML keeps `0027` as the text it is, `reading.py`). A bare number from 8 up is refused: YAML
    gives `27` as the number 27, which a person means as the digits (0o027) and a tool that wrote the mask 0o027 as
    YAML wrote as `23`; read either way, the other's files would silently get another mask."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 8:
        return value
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,3}", value.strip()):
        return int(value.strip(), 8)
    if isinstance(value, int) and not isinstance(value, bool) and re.fullmatch(r"[0-7]{2,3}", str(value)):
        raise problem(
            f"the number {value} could be octal digits or a decimal mask: write the umask with a leading zero "
            f'(0{value}) or quoted ("{value}")'
        )
    raise invalid('an octal umask such as "0022" or "0027"', value)


def _umask_text(mask: int | str) -> str:
    """As the file writes it, "0022"; the docs' table shows the default unvalidated, as the schema writes it."""
    return f"{_umask(mask) if isinstance(mask, str) else mask:04o}"


Umask = Annotated[int, PlainValidator(_umask), PlainSerializer(_umask_text)]
Address = Annotated[str, PlainValidator(_address)]
Network = Annotated[str, PlainValidator(_tcp)]
AbsolutePath = Annotated[str, PlainValidator(_absolute_path)]
Directory = Annotated[str, PlainValidator(_directory)]
LogLevel = Annotated[str, PlainValidator(_log_level)]
TLSVersion = Annotated[str, PlainValidator(_tls_version)]
LogFormatter = Annotated[str, PlainValidator(_log_formatter)]
URLPath = Annotated[str, PlainValidator(_url_path)]
DatabaseURL = Annotated[str, PlainValidator(_database_url)]
Version = Annotated[str, PlainValidator(_version)]
Mapping = BeforeValidator(_mapping)
"""For a mapping typed key (`Annotated[dict[...], Mapping]`): None is empty, anything else not a dict refused."""
Headers = Annotated[
    dict[Annotated[str, PlainValidator(_header_name)], Annotated[list[str], PlainValidator(_header_values)]], Mapping
]
