"""`load()`: the embedded defaults, then the YAML file, then the REGISTRY_* variables, validated by the schema."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from docker_registry.core.exceptions import ConfigError

from . import environment, errors, reading
from .schema import Config


def load(path: str | None, environ: Mapping[str, str] = os.environ) -> Config:
    """The effective configuration; any problem is a ConfigError naming the key (and the variable that set it)."""
    warnings: list[str] = []
    raw = _read_file(path, warnings) if path else {}
    overrides = environment.apply(raw, environ)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(errors.describe(exc, overrides)) from None
    config.notices[:0] = [f"{path}: {warning}" for warning in warnings] + overrides.ignored
    return config


def _read_file(path: str, warnings: list[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = f"{path}: cannot read the configuration file: {getattr(exc, 'strerror', None) or exc}"
        raise ConfigError(message) from None
    try:
        data = reading.parse(text, warnings)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's message, which quotes the lines around the problem over six lines, as one: where, and what."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return " ".join(str(error).split())
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = "; ".join(part for part in (error.problem, error.context) if part)
    return f"{where}{what}"
