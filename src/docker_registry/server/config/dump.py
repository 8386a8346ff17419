"""`dump()`: the effective configuration in the file's own keys, for `docker-registry config`; loadable again."""

from __future__ import annotations

from typing import Any

from .schema import Config
from .section import DriverSection, Secret, Section, declared, marker
from .values import SECRET_KEY


def dump(config: Config, *, show_secrets: bool = False) -> dict[str, Any]:
    """Secrets masked unless asked; keys accepted but ignored left out; http.workers as the count `serve` starts."""
    workers = config.http.worker_count
    effective = config.model_copy(update={"http": config.http.model_copy(update={"workers": workers})})
    return _section(effective, show_secrets)


def _section(section: Section, show_secrets: bool) -> dict[str, Any]:
    written = section.model_dump(by_alias=True, exclude_none=True)  # values as the file writes them ("30s")
    data: dict[str, Any] = {}
    for key, options in (section.model_extra or {}).items():  # another driver's section, first as in the docs
        data[key] = _options(options, show_secrets)
    for name, key, field in declared(type(section)):
        value = getattr(section, name)
        if key not in written:  # unset (None), or ignored (excluded)
            continue
        if isinstance(value, DriverSection):
            data[key] = _options(value, show_secrets)
        elif isinstance(value, Section):
            data[key] = _section(value, show_secrets)
        elif isinstance(value, list) and value and all(isinstance(item, Section) for item in value):
            data[key] = [_section(item, show_secrets) for item in value]  # their secrets masked too
        else:
            secret = marker(field, Secret)
            data[key] = secret.mask(value) if secret and not show_secrets else written[key]
    return data


def _options(section: DriverSection, show_secrets: bool) -> dict[str, Any]:
    """A driver's options: those the schema declares a `Secret` (storage.s3.accesskey) masked as it says, the others
    when their name says they are one."""
    options = section.model_dump(by_alias=True)
    if show_secrets:
        return options
    secrets = {key: secret for _, key, field in declared(type(section)) if (secret := marker(field, Secret))}
    masked: dict[str, Any] = {}
    for key, value in options.items():
        if value is not None and key in secrets:
            masked[key] = secrets[key].mask(value)
        else:
            masked[key] = "***" if value is not None and SECRET_KEY.search(key) else value
    return masked
