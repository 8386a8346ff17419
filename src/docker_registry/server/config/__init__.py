"""The configuration: typed settings loaded from YAML and `REGISTRY_*` variables; every other layer reads it."""

from .settings import (
    Config,
    DatabaseConfig,
    HTTPConfig,
    LogConfig,
    StorageConfig,
    ValidationConfig,
    dump,
    hide_password,
    load,
    split_addr,
)

__all__ = [
    "Config",
    "DatabaseConfig",
    "HTTPConfig",
    "LogConfig",
    "StorageConfig",
    "ValidationConfig",
    "dump",
    "hide_password",
    "load",
    "split_addr",
]
