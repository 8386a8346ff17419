"""Server configuration: the typed settings every other module reads.

Keys follow CNCF Distribution's config.yml where the feature is the same, so an operator's file mostly works.
`load()` (YAML file + `REGISTRY_<SECTION>_<KEY>` overrides + validation) fills these dataclasses.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from docker_registry.core.exceptions import ConfigError

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


@dataclass
class StorageConfig:
    driver: str = "filesystem"
    """Driver name as given to `docker_registry.core.driver.fetch` ("filesystem", "inmemory", "s3", ...)."""
    options: dict[str, Any] = field(default_factory=lambda: {"rootdirectory": "./data"})
    """The driver's own section, e.g. storage.filesystem -> {"rootdirectory": "./data"}.

    `load()` makes the filesystem rootdirectory absolute, relative to the current directory."""
    delete_enabled: bool = False
    """storage.delete.enabled: allow DELETE of manifests, tags and blobs."""
    readonly: bool = False
    """storage.maintenance.readonly.enabled: refuse every write with 405 UNSUPPORTED... (Distribution answers 405)."""
    redirect: bool = True
    """storage.redirect.disable inverted: use the driver's content_redirect_url for blob GETs when it has one."""

    def describe(self) -> str:
        """For the start-up log line."""
        if self.driver == "filesystem":
            return f"filesystem ({self.options.get('rootdirectory')})"
        return self.driver


@dataclass
class HTTPConfig:
    addr: str = "127.0.0.1:5000"
    secret: str | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Extra response headers added to every response (http.headers)."""
    workers: int | None = None
    """Worker processes sharing the port; None means one per core (always 1 with the inmemory driver)."""
    tls_certificate: str | None = None
    tls_key: str | None = None
    tls_minimum: str = "tls1.2"
    """http.tls.minimumtls: "tls1.2" or "tls1.3"."""
    draintimeout: float = 30.0
    """http.draintimeout, seconds: on SIGTERM, how long requests in flight may take to finish."""

    def host_port(self) -> tuple[str | None, int]:
        """The address to bind; host None means every interface (Distribution's ":5000")."""
        return split_addr(self.addr)


@dataclass
class DatabaseConfig:
    url: str | None = None
    """SQLAlchemy URL; None means SQLite in the data directory (`<rootdirectory>/registry.db`)."""


@dataclass
class LogConfig:
    level: str = "info"
    accesslog: bool = True


@dataclass
class ValidationConfig:
    manifest_max_bytes: int = 4 * 1024 * 1024
    """validation.manifests.maxbytes: larger manifest PUTs are refused with MANIFEST_INVALID / 413."""


@dataclass
class Config:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    notices: list[str] = field(default_factory=list)
    """Accepted-but-ignored settings (Distribution features we do not have yet); `serve` logs them as warnings."""


# --- addresses ---------------------------------------------------------------------------------------------------


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


def hide_password(url: str) -> str:
    """A database URL fit for logs and `config` output."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


# --- loading -------------------------------------------------------------------------------------------------------

ENV_PREFIX = "REGISTRY_"
ENV_NOT_OVERRIDES = {"REGISTRY_CONFIGURATION_PATH", "REGISTRY_UNDER_TEST"}
"""REGISTRY_* variables that name the file or steer the test harness, not a key."""

UNSUPPORTED_SECTIONS = {
    "auth": "auth: not supported yet; ignored, so EVERY request is served without authentication",
    "notifications": "notifications: not supported yet; ignored, no events are sent",
    "redis": "redis: not supported yet; ignored (caches are per process)",
    "health": "health: not supported yet; ignored",
    "proxy": "proxy: not supported yet (pull-through cache); ignored",
    "middleware": "middleware: not supported yet; ignored",
    "reporting": "reporting: not supported yet; ignored",
    "compatibility": "compatibility: not supported yet; ignored",
    "catalog": "catalog: not supported yet; ignored",
    "policy": "policy: not supported yet; ignored",
    "loglevel": "loglevel: deprecated in Distribution and ignored; use log.level",
    "gc": "gc: not supported yet; ignored",
    "ui": "ui: not supported yet; ignored",
    "access": "access: not supported yet; ignored",
    "v1": "v1: not supported yet; ignored",
}
"""Top-level sections of Distribution (and of our own plans) that are accepted but do nothing yet."""

SECTIONS = {"version", "log", "storage", "http", "database", "validation"}
"""The top-level sections this registry reads."""

STORAGE_KEYS = {"delete", "maintenance", "redirect", "cache", "tag"}
"""Keys of `storage` that are not a driver section; any other key names the driver."""


class _EnvValue(str):
    """A value from an environment variable: kept as text until the key's type is known, named in errors."""

    variable: str

    def __new__(cls, text: str, variable: str) -> _EnvValue:
        value = super().__new__(cls, text)
        value.variable = variable
        return value


def load(path: str | None, environ: Mapping[str, str] = os.environ) -> Config:
    """The effective configuration: embedded defaults, then the YAML file at `path`, then REGISTRY_* variables."""
    raw = _read_file(path) if path else {}
    ignored = _apply_environment(raw, environ)
    config = _Builder(raw).build()
    config.notices[:0] = ignored
    return config


def _read_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = f"{path}: cannot read the configuration file: {getattr(exc, 'strerror', None) or exc}"
        raise ConfigError(message) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """REGISTRY_HTTP_ADDR -> raw["http"]["addr"], Distribution's scheme; REGISTRY_STORAGE=<driver> picks a driver.

    Variables naming no section are ignored with a notice, as Distribution does: Kubernetes injects
    REGISTRY_PORT, REGISTRY_SERVICE_HOST, ... into every pod beside a Service called "registry".
    """
    ignored = []
    selected = environ.get("REGISTRY_STORAGE")
    if selected:
        storage = raw.get("storage") if isinstance(raw.get("storage"), dict) else {}
        kept = {k: v for k, v in storage.items() if k in STORAGE_KEYS or k == selected.lower()}
        kept.setdefault(selected.lower(), None)
        raw["storage"] = kept
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in ENV_NOT_OVERRIDES or variable == "REGISTRY_STORAGE":
            continue
        keys = variable[len(ENV_PREFIX) :].lower().split("_")
        if keys[0] not in SECTIONS and keys[0] not in UNSUPPORTED_SECTIONS:
            ignored.append(f"{variable}: names no configuration section; ignored")
            continue
        if not all(keys):
            raise ConfigError(f"{variable}: malformed variable name")
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"{variable}: {where} is not a section, cannot set {'.'.join(keys)}")
            node = child
        node[keys[-1]] = _EnvValue(environ[variable], variable)
    return ignored


def _typed(value: Any) -> Any:
    """An environment value read as a YAML scalar ("true", "4", "1.5"), for keys whose type is not text."""
    if isinstance(value, _EnvValue):
        try:
            return yaml.safe_load(str(value))
        except yaml.YAMLError:
            return str(value)
    return value


def _loose(value: Any) -> Any:
    """For driver options (no schema here): typed when the text round-trips ("true", "10"), else text ("0123")."""
    if isinstance(value, dict):
        return {k: _loose(v) for k, v in value.items()}
    if not isinstance(value, _EnvValue):
        return value
    typed = _typed(value)
    if typed is None or isinstance(typed, bool | dict | list):
        return typed
    if isinstance(typed, int | float) and str(typed) == str(value):
        return typed
    return str(value)


class _Builder:
    """Walks the raw mapping section by section; every error names the dotted key (and the variable, if any)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.config = Config()

    def build(self) -> Config:
        sections: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "log": self._log,
            "storage": self._storage,
            "http": self._http,
            "database": self._database,
            "validation": self._validation,
        }
        for key, value in self.raw.items():
            if not isinstance(key, str):
                raise ConfigError(f"{key!r}: section names are text")
            if key == "version":
                self._version(value)
            elif key in sections:
                sections[key](key, self._section(key, value))
            elif key in UNSUPPORTED_SECTIONS:
                self.config.notices.append(UNSUPPORTED_SECTIONS[key])
            else:
                raise ConfigError(f"{self._name(key, value)}: unknown section")
        if self.config.storage.driver == "filesystem":
            self._filesystem(self.config.storage.options)
        if self.config.storage.driver == "inmemory":
            self._one_process()
        return self.config

    # helpers

    @staticmethod
    def _name(key: str, value: Any) -> str:
        if isinstance(value, _EnvValue):
            return f"{key} (from {value.variable})"
        return key

    def _fail(self, key: str, value: Any, expected: str) -> ConfigError:
        shown = str(value) if isinstance(value, _EnvValue) else value
        return ConfigError(f"{self._name(key, value)}: expected {expected}, got {shown!r}")

    def _section(self, key: str, value: Any) -> dict[str, Any]:
        typed = _typed(value)
        if typed is None:
            return {}
        if not isinstance(typed, dict):
            raise self._fail(key, value, "a mapping")
        for name in typed:
            if not isinstance(name, str):
                raise ConfigError(f"{key}.{name!r}: keys are text")
        return typed

    def _keys(self, prefix: str, section: dict[str, Any], known: set[str], ignored: set[str] = frozenset()) -> None:
        for name, value in section.items():
            if name in ignored:
                self.config.notices.append(f"{prefix}.{name}: not supported yet; ignored")
            elif name not in known:
                raise ConfigError(f"{self._name(f'{prefix}.{name}', value)}: unknown key")

    def _bool(self, key: str, value: Any) -> bool:
        typed = _typed(value)
        if not isinstance(typed, bool):
            raise self._fail(key, value, "true or false")
        return typed

    def _text(self, key: str, value: Any, *, empty: bool = False) -> str:
        if isinstance(value, _EnvValue):
            value = str(value)
        if not isinstance(value, str) or (not empty and not value):
            raise self._fail(key, value, "a non-empty string" if not empty else "a string")
        return value

    def _positive_int(self, key: str, value: Any) -> int:
        typed = _typed(value)
        if isinstance(typed, bool) or not isinstance(typed, int) or typed < 1:
            raise self._fail(key, value, "a positive integer")
        return typed

    def _duration(self, key: str, value: Any) -> float:
        """Seconds, or a Go duration as Distribution writes them ("30s", "1m30s", "500ms")."""
        typed = _typed(value)
        if isinstance(typed, int | float) and not isinstance(typed, bool) and typed >= 0:
            return float(typed)
        units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
        if isinstance(typed, str) and re.fullmatch(r"(\d+(\.\d+)?(h|ms|m|s|us|µs|ns))+", typed):
            return sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s|us|µs|ns)", typed))
        raise self._fail(key, value, 'a duration in seconds or like "30s", "1m30s"')

    # sections

    def _version(self, value: Any) -> None:
        typed = _typed(value)
        if str(typed) != "0.1":
            raise self._fail("version", value, '"0.1" (the only configuration version)')
        self.config.version = "0.1"

    def _log(self, prefix: str, section: dict[str, Any]) -> None:
        self._keys(prefix, section, {"level", "accesslog"}, {"formatter", "fields", "hooks", "reportcaller"})
        if "level" in section:
            level = section["level"]
            text = _typed(level)
            if not isinstance(text, str) or text.lower() not in LOG_LEVELS:
                raise self._fail("log.level", level, "one of error, warn, info, debug")
            self.config.log.level = LOG_LEVELS[text.lower()]
        if "accesslog" in section:
            accesslog = self._section("log.accesslog", section["accesslog"])
            self._keys("log.accesslog", accesslog, {"disabled"})
            if "disabled" in accesslog:
                self.config.log.accesslog = not self._bool("log.accesslog.disabled", accesslog["disabled"])

    def _storage(self, prefix: str, section: dict[str, Any]) -> None:
        storage = self.config.storage
        drivers = [name for name in section if name not in STORAGE_KEYS]
        if len(drivers) > 1:
            raise ConfigError(f"storage: exactly one storage driver may be configured, got {', '.join(drivers)}")
        if drivers:
            storage.driver = drivers[0]
            storage.options = _loose(self._section(f"storage.{storage.driver}", section[storage.driver]))
        if "delete" in section:
            delete = self._section("storage.delete", section["delete"])
            self._keys("storage.delete", delete, {"enabled"})
            if "enabled" in delete:
                storage.delete_enabled = self._bool("storage.delete.enabled", delete["enabled"])
        if "maintenance" in section:
            maintenance = self._section("storage.maintenance", section["maintenance"])
            self._keys("storage.maintenance", maintenance, {"readonly"}, {"uploadpurging"})
            if "readonly" in maintenance:
                readonly = self._section("storage.maintenance.readonly", maintenance["readonly"])
                self._keys("storage.maintenance.readonly", readonly, {"enabled"})
                if "enabled" in readonly:
                    storage.readonly = self._bool("storage.maintenance.readonly.enabled", readonly["enabled"])
        if "redirect" in section:
            redirect = self._section("storage.redirect", section["redirect"])
            self._keys("storage.redirect", redirect, {"disable"})
            if "disable" in redirect:
                storage.redirect = not self._bool("storage.redirect.disable", redirect["disable"])
        if "cache" in section:
            self.config.notices.append("storage.cache: ignored; this registry keeps its own caches in each process")
        if "tag" in section:
            self.config.notices.append("storage.tag: not supported yet; ignored")

    def _one_process(self) -> None:
        """In-memory blobs live in one process: a second worker would not see what the first one stored."""
        workers = self.config.http.workers
        if workers is not None and workers > 1:
            raise ConfigError(f"http.workers: the inmemory storage driver needs 1 worker, got {workers}")
        self.config.http.workers = 1

    def _filesystem(self, options: dict[str, Any]) -> None:
        """Relative roots are resolved against the current directory (Distribution requires absolute ones)."""
        root = options.get("rootdirectory", "./data")
        root = self._text("storage.filesystem.rootdirectory", root)
        options["rootdirectory"] = os.path.abspath(os.path.expanduser(root))
        if "maxthreads" in options:
            self.config.notices.append("storage.filesystem.maxthreads: not used by this registry; ignored")

    def _http(self, prefix: str, section: dict[str, Any]) -> None:
        http = self.config.http
        self._keys(
            prefix,
            section,
            {"addr", "net", "secret", "headers", "workers", "tls", "draintimeout"},
            {"prefix", "host", "relativeurls", "debug", "http2", "h2c"},
        )
        if "net" in section and _typed(section["net"]) != "tcp":
            raise self._fail("http.net", section["net"], '"tcp" (unix sockets are not supported yet)')
        if "addr" in section:
            addr = self._text("http.addr", section["addr"])
            try:
                split_addr(addr)
            except ValueError as exc:
                raise ConfigError(f"{self._name('http.addr', section['addr'])}: {exc}, got {addr!r}") from None
            http.addr = addr
        if "secret" in section:
            http.secret = self._text("http.secret", section["secret"])
        if "headers" in section:
            http.headers = self._headers(self._section("http.headers", section["headers"]))
        if "workers" in section:
            http.workers = self._positive_int("http.workers", section["workers"])
        if "draintimeout" in section:
            http.draintimeout = self._duration("http.draintimeout", section["draintimeout"])
        if "tls" in section:
            self._tls(self._section("http.tls", section["tls"]))

    def _headers(self, headers: dict[str, Any]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for name, values in headers.items():
            key = f"http.headers.{name}"
            if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise ConfigError(f"{key}: not a valid header name")
            typed = _typed(values)
            if isinstance(typed, str | int | float) and not isinstance(typed, bool):
                typed = [typed]
            if not isinstance(typed, list) or not typed:
                raise self._fail(key, values, "a list of values")
            texts = []
            for value in typed:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, str | int | float)
                    or re.search(r"[\r\n]", str(value))
                ):
                    raise self._fail(key, value, "header values as text on one line")
                texts.append(str(value))
            result[name] = texts
        return result

    def _tls(self, tls: dict[str, Any]) -> None:
        http = self.config.http
        if "clientcas" in tls:
            # Ignoring it would let in clients the operator meant to refuse: refuse to start instead.
            raise ConfigError("http.tls.clientcas: client certificate authentication is not supported yet")
        if "letsencrypt" in tls:
            # Ignoring it would serve plain HTTP where the operator expects HTTPS.
            raise ConfigError("http.tls.letsencrypt: not supported yet; give http.tls.certificate and key")
        self._keys("http.tls", tls, {"certificate", "key", "minimumtls"}, {"ciphersuites"})
        if "certificate" in tls:
            http.tls_certificate = os.path.abspath(self._text("http.tls.certificate", tls["certificate"]))
        if "key" in tls:
            http.tls_key = os.path.abspath(self._text("http.tls.key", tls["key"]))
        if "minimumtls" in tls:
            minimum = _typed(tls["minimumtls"])
            if minimum not in ("tls1.2", "tls1.3"):
                raise self._fail("http.tls.minimumtls", tls["minimumtls"], "tls1.2 or tls1.3")
            http.tls_minimum = minimum
        if bool(http.tls_certificate) != bool(http.tls_key):
            raise ConfigError("http.tls: certificate and key must be given together")

    def _database(self, prefix: str, section: dict[str, Any]) -> None:
        self._keys(prefix, section, {"url"})
        if "url" in section:
            url = self._text("database.url", section["url"])
            if "://" not in url:
                raise self._fail("database.url", section["url"], "an SQLAlchemy URL such as postgresql://host/db")
            self.config.database.url = url

    def _validation(self, prefix: str, section: dict[str, Any]) -> None:
        self._keys(prefix, section, {"manifests"}, {"enabled", "disabled"})
        if "manifests" in section:
            manifests = self._section("validation.manifests", section["manifests"])
            self._keys("validation.manifests", manifests, {"maxbytes"}, {"urls", "indexes"})
            if "maxbytes" in manifests:
                maxbytes = self._positive_int("validation.manifests.maxbytes", manifests["maxbytes"])
                self.config.validation.manifest_max_bytes = maxbytes


# --- the effective configuration as YAML (the `config` command) ------------------------------------------------------

SECRET_OPTION = re.compile(r"secret|password|accountkey|credentials|token", re.IGNORECASE)


def dump(config: Config, *, show_secrets: bool = False) -> dict[str, Any]:
    """The effective configuration in the file's own keys (secrets masked unless asked); loadable again."""

    def hide(key: str, value: Any) -> Any:
        return value if show_secrets or value is None or not SECRET_OPTION.search(key) else "***"

    storage = config.storage
    http = config.http
    tls: dict[str, Any] = {}
    if http.tls_certificate:
        tls = {"certificate": http.tls_certificate, "key": http.tls_key, "minimumtls": http.tls_minimum}
    database: dict[str, Any] = {}
    if config.database.url:
        database["url"] = config.database.url if show_secrets else hide_password(config.database.url)
    return {
        "version": config.version,
        "log": {"level": config.log.level, "accesslog": {"disabled": not config.log.accesslog}},
        "storage": {
            storage.driver: {k: hide(k, v) for k, v in storage.options.items()},
            "delete": {"enabled": storage.delete_enabled},
            "maintenance": {"readonly": {"enabled": storage.readonly}},
            "redirect": {"disable": not storage.redirect},
        },
        "http": {
            "addr": http.addr,
            **({"secret": hide("secret", http.secret)} if http.secret else {}),
            "headers": http.headers,
            "workers": http.workers or os.cpu_count() or 1,
            "draintimeout": f"{http.draintimeout:g}s",
            **({"tls": tls} if tls else {}),
        },
        "database": database,
        "validation": {"manifests": {"maxbytes": config.validation.manifest_max_bytes}},
    }
