"""The configuration: one declared schema (`schema.py`) from which come loading YAML and `REGISTRY_*` variables,
the `config` command's output and the docs' key table; every other layer reads the `Config` it gives."""

from .dump import dump
from .loading import load
from .schema import (
    CheckSection,
    Config,
    DatabaseConfig,
    HealthConfig,
    HTTPConfig,
    LogConfig,
    StorageConfig,
    ValidationConfig,
)
from .values import hide_password, split_addr

__all__ = [
    "CheckSection",
    "Config",
    "DatabaseConfig",
    "HTTPConfig",
    "HealthConfig",
    "LogConfig",
    "StorageConfig",
    "ValidationConfig",
    "dump",
    "hide_password",
    "load",
    "split_addr",
]
