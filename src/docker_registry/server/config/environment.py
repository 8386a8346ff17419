"""`REGISTRY_<SECTION>_<KEY>` overrides, Distribution's scheme, applied to the file's mapping before validation.

`REGISTRY_HTTP_ADDR` sets http.addr, `REGISTRY_STORAGE_DELETE_ENABLED` storage.delete.enabled, and
`REGISTRY_STORAGE=<driver>` selects the driver. The schema says how each variable's text is read: a text key keeps
it (a secret "1234" stays text), a typed key reads it as a YAML scalar ("true", "4", "30s"), and a driver's options,
which have no schema here, are typed only when the text reads back the same ("10", "true", but "0123" stays text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

import yaml

from docker_registry.core.exceptions import ConfigError

from . import reading
from .schema import SECTIONS, Config, StorageConfig
from .section import bare, declared, section_type, takes_extra_keys

PREFIX = "REGISTRY_"
SELECT_DRIVER = "REGISTRY_STORAGE"
SELECT_AUTH = "REGISTRY_AUTH"
"""`REGISTRY_AUTH=htpasswd` with `REGISTRY_AUTH_HTPASSWD_PATH=...`: how Distribution's documentation sets up Basic
authentication in a container; the value names the backend, as REGISTRY_STORAGE names the driver."""
NOT_OVERRIDES = {"REGISTRY_CONFIGURATION_PATH", "REGISTRY_HEALTHCHECK_URL", "REGISTRY_UNDER_TEST"}
"""REGISTRY_* variables that name the file, the URL the container image's HEALTHCHECK asks (Dockerfile,
docs/deployment.md) or steer the test harness, not a key."""


@dataclass
class Overrides:
    """What the environment did to the mapping: which variable set which key (for error messages), and the
    variables it ignored (notices)."""

    origins: dict[tuple[str, ...], str] = field(default_factory=dict)
    created: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Sections a variable made to hold its key: REGISTRY_HTTP_ADDR_PORT makes http.addr one if the file has none."""
    ignored: list[str] = field(default_factory=list)

    def variable_for(self, path: tuple[str, ...]) -> str | None:
        """The variable that set the key at `path`, or the section holding it (REGISTRY_HTTP_HEADERS), or that
        made the section at `path`."""
        setters = [(len(key), variable) for key, variable in self.origins.items() if path[: len(key)] == key]
        return max(setters)[1] if setters else self.created.get(path)


def apply(raw: dict[str, Any], environ: Mapping[str, str]) -> Overrides:
    """Set the keys the variables name in `raw` (the file's mapping, changed in place).

    Variables naming no section are ignored with a notice, as Distribution does: Kubernetes injects
    REGISTRY_PORT, REGISTRY_SERVICE_HOST, ... into every pod beside a Service called "registry".
    """
    overrides = Overrides()
    if environ.get(SELECT_DRIVER):
        _select_driver(raw, environ[SELECT_DRIVER].lower())
    if environ.get(SELECT_AUTH):
        backend = environ[SELECT_AUTH].lower()
        if _select_auth(raw, backend):  # the file had that backend: its keys are the file's
            overrides.created[("auth",)] = SELECT_AUTH
        else:
            overrides.origins[("auth", backend)] = SELECT_AUTH
    for variable in sorted(environ):
        if not variable.startswith(PREFIX) or variable in NOT_OVERRIDES or variable in (SELECT_DRIVER, SELECT_AUTH):
            continue
        keys = variable[len(PREFIX) :].lower().split("_")
        if keys[0] not in SECTIONS:
            overrides.ignored.append(f"{variable}: names no configuration section; ignored")
            continue
        if not all(keys):
            raise ConfigError(f"{variable}: malformed variable name")
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
                overrides.created.setdefault(tuple(keys[: depth + 1]), variable)
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"{variable}: {where} is not a section, cannot set {'.'.join(keys)}")
            node = child
        node[keys[-1]] = _reader(keys)(environ[variable])
        overrides.origins[tuple(keys)] = variable
    return overrides


def _select_driver(raw: dict[str, Any], driver: str) -> None:
    """REGISTRY_STORAGE=s3: the file's other driver section is dropped, its shared keys (delete, ...) kept."""
    shared = StorageConfig.shared_keys()
    if driver in shared:
        raise ConfigError(f"{SELECT_DRIVER}: {driver!r} is not a storage driver")
    storage = raw.get("storage")
    kept = {k: v for k, v in storage.items() if k in shared or k == driver} if isinstance(storage, dict) else {}
    kept.setdefault(driver, None)
    raw["storage"] = kept


def _select_auth(raw: dict[str, Any], backend: str) -> bool:
    """REGISTRY_AUTH=htpasswd: the auth section holds that backend only (the file's, if it has one), which
    REGISTRY_AUTH_HTPASSWD_* variables then fill in. The value was taken for the whole section before, and
    refused: `auth: expected a mapping, got 'htpasswd'`. Whether the file had that backend's section."""
    auth = raw.get("auth")
    kept = auth.get(backend) if isinstance(auth, dict) else None
    raw["auth"] = {backend: {} if kept is None else kept}
    return kept is not None


def _reader(keys: list[str]) -> Callable[[str], Any]:
    """How the key at `keys` reads a variable's text, from the type the schema gives it."""
    annotation: Any = Config
    for key in keys:
        section = section_type(annotation)
        if section is not None:
            found = next((f for _, name, f in declared(section) if name == key), None)
            if found is None:
                # Driver options, or a key validation will refuse as unknown (and name, text as given).
                return _loose if takes_extra_keys(section) else str
            annotation = found.annotation
        elif get_origin(bare(annotation)) is dict:  # a typed mapping such as http.headers: its values' type
            annotation = get_args(bare(annotation))[1]
        else:
            return _loose  # below an ignored section (auth.htpasswd.realm) or a scalar
    kind = bare(annotation)
    if kind is str:
        return str
    if kind is object:
        return _loose
    return _typed


def _typed(text: str) -> Any:
    """The text as a YAML scalar (or flow mapping/list): "true", "4", "{X-Frame-Options: [DENY]}"."""
    try:
        return reading.parse(text)
    except yaml.YAMLError:
        return text


def _loose(text: str) -> Any:
    """For keys without a schema: typed when the text round-trips ("true", "10"), else text ("0123", "1e3")."""
    typed = _typed(text)
    if typed is None or isinstance(typed, bool | dict | list):
        return typed
    if isinstance(typed, int | float) and str(typed) == text:
        return typed
    return text
