"""Server configuration: the typed settings every other module reads.

Keys follow CNCF Distribution's config.yml where the feature is the same, so an operator's file mostly works.
`load()` (YAML file + `REGISTRY_<SECTION>_<KEY>` overrides + validation) fills these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StorageConfig:
    driver: str = "filesystem"
    """Driver name as given to `docker_registry.core.driver.fetch` ("filesystem", "inmemory", "s3", ...)."""
    options: dict[str, Any] = field(default_factory=lambda: {"rootdirectory": "./data"})
    """The driver's own section, e.g. storage.filesystem -> {"rootdirectory": "./data"}."""
    delete_enabled: bool = False
    """storage.delete.enabled: allow DELETE of manifests, tags and blobs."""
    readonly: bool = False
    """storage.maintenance.readonly.enabled: refuse every write with 405 UNSUPPORTED... (Distribution answers 405)."""
    redirect: bool = True
    """storage.redirect.disable inverted: use the driver's content_redirect_url for blob GETs when it has one."""


@dataclass
class HTTPConfig:
    addr: str = "127.0.0.1:5000"
    secret: str | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Extra response headers added to every response (http.headers)."""
    workers: int | None = None
    """Worker processes sharing the port; None means one per core."""
    tls_certificate: str | None = None
    tls_key: str | None = None


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


@dataclass
class Config:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
