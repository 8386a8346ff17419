"""Configuration loading: defaults, Distribution's keys, REGISTRY_* overrides and the errors an operator sees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_registry.core.exceptions import ConfigError
from docker_registry.server.config import Config, dump, hide_password, load, reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "config.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def load_yaml(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> Config:
    return load(write(tmp_path, data), env or {})


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load(None, {})
    assert config.http.addr == "127.0.0.1:5000"
    assert config.http.host_port() == ("127.0.0.1", 5000)
    assert config.http.workers is None
    assert config.http.draintimeout == 30.0
    assert config.storage.driver == "filesystem"
    assert config.storage.options == {"rootdirectory": str(tmp_path / "data")}
    assert config.storage.delete_enabled is False
    assert config.storage.readonly is False
    assert config.storage.redirect is True
    assert config.database.url is None
    assert config.log.level == "info"
    assert config.log.accesslog is True
    assert config.notices == []


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_yaml(tmp_path, "") == load(None, {})


def test_distribution_keys(tmp_path: Path) -> None:
    config = load_yaml(
        tmp_path,
        {
            "version": 0.1,
            "log": {"level": "debug", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": "/var/lib/registry"},
                "delete": {"enabled": True},
                "maintenance": {
                    "readonly": {"enabled": True},
                    "uploadpurging": {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False},
                },
                "redirect": {"disable": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": ":5001",
                "secret": "s3cr3t",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
                "draintimeout": "1m30s",
                "workers": 3,
            },
            "database": {"url": "postgresql://reg:pw@db/registry"},
            "validation": {"manifests": {"maxbytes": 1000}},
        },
    )
    assert config.log.level == "debug"
    assert config.log.accesslog is False
    assert config.storage.driver == "filesystem"
    assert config.storage.options == {"rootdirectory": "/var/lib/registry"}
    assert config.storage.delete_enabled is True
    assert config.storage.readonly is True
    assert config.storage.redirect is False
    assert config.http.host_port() == (None, 5001)
    assert config.http.secret == "s3cr3t"
    assert config.http.headers == {"X-Content-Type-Options": ["nosniff"]}
    assert config.http.draintimeout == 90.0
    assert config.http.workers == 3
    assert config.database.url == "postgresql://reg:pw@db/registry"
    assert config.validation.manifest_max_bytes == 1000
    assert config.storage.maintenance.uploadpurging.age == 168 * 3600.0
    assert not any(n.startswith("storage.maintenance.uploadpurging") for n in config.notices)
    assert any(n.startswith("storage.cache") for n in config.notices)


def test_debian_default_config_file_loads(tmp_path: Path) -> None:
    """The config.yml Debian ships with its docker-registry package works, with warnings, but for its `auth` section:
    its htpasswd path is a directory, and serving without the authentication it asks for is no option."""
    debian = """
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: basic-realm
    path: /etc/docker/registry
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""
    with pytest.raises(ConfigError, match=r"auth\.htpasswd\.path: cannot read '/etc/docker/registry'"):
        load_yaml(tmp_path, debian)
    without_auth = debian.replace("auth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\n", "")
    config = load_yaml(tmp_path, without_auth)
    assert config.storage.options["rootdirectory"] == "/var/lib/docker-registry"
    assert config.http.host_port() == (None, 5000)
    notices = "\n".join(config.notices)
    assert "storage.cache" in notices
    assert config.log.fields == {"service": "registry"}
    assert config.health.storagedriver.threshold == 3
    assert config.health.storagedriver.interval == 10.0


def test_relative_rootdirectory_is_resolved_against_the_current_directory(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, {"storage": {"filesystem": {"rootdirectory": "store/here"}}})
    assert config.storage.options["rootdirectory"] == str(tmp_path / "store" / "here")


def test_rootdirectory_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    """Refused when the configuration is read (`serve` exits 2 naming the key), not when the directory is made."""
    (tmp_path / "not-a-dir").write_text("a file\n")
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, {"storage": {"filesystem": {"rootdirectory": "not-a-dir"}}})
    assert str(raised.value) == (
        f"storage.filesystem.rootdirectory: {str(tmp_path / 'not-a-dir')!r} exists and is not a directory"
    )
    with pytest.raises(ConfigError) as raised:
        load(None, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "not-a-dir"})
    assert str(raised.value).startswith(
        "storage.filesystem.rootdirectory (from REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY): "
    )
    (tmp_path / "data").write_text("a file where the default data directory goes\n")
    with pytest.raises(ConfigError, match=r"^storage\.filesystem\.rootdirectory: .*/data' exists and is not a dir"):
        load(None, {})


def test_other_drivers_keep_their_options(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, {"storage": {"gcs": {"bucket": "images", "region": "eu-west-1", "secure": True}}})
    assert config.storage.driver == "gcs"
    assert config.storage.options == {"bucket": "images", "region": "eu-west-1", "secure": True}
    s3 = load_yaml(tmp_path, {"storage": {"s3": {"bucket": "images", "region": "eu-west-1", "secure": False}}})
    assert s3.storage.driver == "s3"
    assert s3.storage.options["bucket"] == "images"
    assert s3.storage.options["secure"] is False
    assert s3.storage.options["chunksize"] == 10 * 1024 * 1024  # the schema's defaults, which are Distribution's
    in_memory = load_yaml(tmp_path, "storage:\n  inmemory:\n")
    assert in_memory.storage.driver == "inmemory"
    assert in_memory.http.workers == 1  # blobs in memory are one process's


@pytest.mark.parametrize(
    ("level", "expected"),
    [("error", "error"), ("warn", "warn"), ("warning", "warn"), ("INFO", "info"), ("debug", "debug")],
)
def test_log_levels(tmp_path: Path, level: str, expected: str) -> None:
    assert load_yaml(tmp_path, {"log": {"level": level}}).log.level == expected


@pytest.mark.parametrize("section", ["redis", "middleware", "reporting"])
def test_distribution_sections_we_lack_are_accepted_with_a_notice(tmp_path: Path, section: str) -> None:
    config = load_yaml(tmp_path, {section: {"anything": {"nested": 1}}})
    assert len(config.notices) == 1
    assert config.notices[0].startswith(f"{section}: not supported yet")


def test_tls_paths(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, {"http": {"tls": {"certificate": "c.pem", "key": "/k.pem", "minimumtls": "tls1.3"}}})
    assert config.http.tls_certificate == str(tmp_path / "c.pem")
    assert config.http.tls_key == "/k.pem"
    assert config.http.tls_minimum == "tls1.3"


def test_ipv6_addr(tmp_path: Path) -> None:
    assert load_yaml(tmp_path, {"http": {"addr": "[::1]:8080"}}).http.host_port() == ("::1", 8080)


# --- environment overrides ---------------------------------------------------------------------------------------


def test_environment_overrides_with_types(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"http": {"addr": "127.0.0.1:5000", "workers": 1}, "storage": {"delete": {"enabled": False}}}
    )
    config = load(
        path,
        {
            "REGISTRY_HTTP_ADDR": "0.0.0.0:6000",
            "REGISTRY_HTTP_WORKERS": "4",
            "REGISTRY_HTTP_SECRET": "1234",
            "REGISTRY_HTTP_DRAINTIMEOUT": "5",
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/srv/registry",
            "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED": "yes",
            "REGISTRY_LOG_LEVEL": "warn",
            "REGISTRY_LOG_ACCESSLOG_DISABLED": "true",
            "REGISTRY_DATABASE_URL": "postgresql://db/registry",
            "REGISTRY_VALIDATION_MANIFESTS_MAXBYTES": "2048",
            "REGISTRY_HTTP_HEADERS": "{X-Frame-Options: [DENY]}",
            "PATH": "/usr/bin",
        },
    )
    assert config.http.addr == "0.0.0.0:6000"
    assert config.http.workers == 4
    assert config.http.secret == "1234"  # text keys stay text
    assert config.http.draintimeout == 5.0
    assert config.http.headers == {"X-Frame-Options": ["DENY"]}
    assert config.storage.delete_enabled is True
    assert config.storage.readonly is True
    assert config.storage.options == {"rootdirectory": "/srv/registry"}
    assert config.log.level == "warn"
    assert config.log.accesslog is False
    assert config.database.url == "postgresql://db/registry"
    assert config.validation.manifest_max_bytes == 2048


def test_environment_without_a_file(tmp_path: Path) -> None:
    config = load(None, {"REGISTRY_HTTP_ADDR": ":5002", "REGISTRY_STORAGE_DELETE_ENABLED": "true"})
    assert config.http.host_port() == (None, 5002)
    assert config.storage.delete_enabled is True
    assert config.storage.options == {"rootdirectory": str(tmp_path / "data")}


def test_environment_selects_the_storage_driver(tmp_path: Path) -> None:
    path = write(tmp_path, {"storage": {"filesystem": {"rootdirectory": "/x"}, "delete": {"enabled": True}}})
    config = load(
        path,
        {"REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": "b", "REGISTRY_STORAGE_S3_SECRETKEY": "0123"},
    )
    assert config.storage.driver == "s3"
    assert config.storage.options["bucket"] == "b"
    assert config.storage.options["secretkey"] == "0123"  # not read as octal
    assert config.storage.delete_enabled is True
    assert load(None, {"REGISTRY_STORAGE": "inmemory"}).storage.driver == "inmemory"


def test_unrelated_registry_variables_are_not_keys(tmp_path: Path) -> None:
    config = load(None, {"REGISTRY_UNDER_TEST": "ours", "REGISTRY_CONFIGURATION_PATH": "/etc/x.yml"})
    assert config == load(None, {})


def test_variables_naming_no_section_are_ignored_with_a_notice(tmp_path: Path) -> None:
    """Kubernetes puts these into every pod next to a Service named "registry"; Distribution ignores them too."""
    config = load(None, {"REGISTRY_PORT": "tcp://10.0.0.7:5000", "REGISTRY_SERVICE_HOST": "10.0.0.7"})
    assert config.http.addr == "127.0.0.1:5000"
    assert config.notices == [
        "REGISTRY_PORT: names no configuration section; ignored",
        "REGISTRY_SERVICE_HOST: names no configuration section; ignored",
    ]


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"http": {"workers": "x"}}, "http.workers: expected a positive integer, got 'x'"),
        ({"http": {"workers": 0}}, "http.workers: expected a positive integer, got 0"),
        ({"http": {"workers": True}}, "http.workers: expected a positive integer"),
        ({"http": {"addr": "localhost"}}, "http.addr: expected host:port"),
        ({"http": {"addr": "127.0.0.1:99999"}}, "http.addr: expected host:port"),
        ({"http": {"addr": "::1:5000"}}, "http.addr: write an IPv6 host in brackets"),
        ({"http": {"addr": 5000}}, "http.addr: expected a non-empty string, got 5000"),
        ({"http": {"net": "unix"}}, 'http.net: expected "tcp"'),
        ({"http": {"draintimeout": "soon"}}, "http.draintimeout: expected a duration"),
        ({"http": {"headers": {"X-A": {"b": 1}}}}, "http.headers.X-A: expected a list of values"),
        ({"http": {"headers": {"Bad Name": ["v"]}}}, "http.headers.Bad Name: not a valid header name"),
        ({"http": {"tls": {"certificate": "c.pem"}}}, "http.tls: certificate and key must be given together"),
        ({"http": {"tls": {"clientcas": ["ca.pem"]}}}, "http.tls: clientcas needs certificate and key"),
        ({"http": {"tls": {"minimumtls": "tls1.0"}}}, "http.tls.minimumtls: expected tls1.2 or tls1.3"),
        ({"http": {"listen": ":80"}}, "http.listen: unknown key"),
        ({"http": "everything"}, "http: expected a mapping, got 'everything'"),
        ({"storage": {"filesystem": {}, "s3": {"bucket": "b"}}}, "storage: exactly one storage driver"),
        ({"storage": {"delete": {"enabled": "maybe"}}}, "storage.delete.enabled: expected true or false, got 'maybe'"),
        ({"storage": {"delete": {"enable": True}}}, "storage.delete.enable: unknown key"),
        ({"storage": {"maintenance": {"readonly": {"enabled": 1}}}}, "storage.maintenance.readonly.enabled: expected"),
        ({"storage": {"redirect": {"disable": "no way"}}}, "storage.redirect.disable: expected true or false"),
        ({"storage": {"filesystem": {"rootdirectory": 7}}}, "storage.filesystem.rootdirectory: expected a non-empty"),
        ({"storage": {"s3": "bucket"}}, "storage.s3: expected a mapping"),
        ({"storage": {"inmemory": {}}, "http": {"workers": 2}}, "http.workers: the inmemory storage driver needs 1"),
        ({"log": {"level": "loud"}}, "log.level: expected one of error, warn, info, debug, got 'loud'"),
        ({"log": {"accesslog": {"disabled": "no"}}}, "log.accesslog.disabled: expected true or false"),
        ({"log": {"colour": True}}, "log.colour: unknown key"),
        ({"database": {"url": "registry.db"}}, "database.url: expected an SQLAlchemy URL"),
        ({"database": {"pool": 3}}, "database.pool: unknown key"),
        ({"validation": {"manifests": {"maxbytes": -1}}}, "validation.manifests.maxbytes: expected a positive integer"),
        ({"version": 2}, 'version: expected "0.1"'),
        ({"htttp": {"addr": ":5000"}}, "htttp: unknown section"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, data)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"REGISTRY_HTTP_WORKERS": "x"},
            "http.workers (from REGISTRY_HTTP_WORKERS): expected a positive integer, got 'x'",
        ),
        ({"REGISTRY_HTTP_WORKERS": "0"}, "http.workers (from REGISTRY_HTTP_WORKERS): expected a positive integer"),
        ({"REGISTRY_HTTP_ADDR": "nowhere"}, "http.addr (from REGISTRY_HTTP_ADDR): expected host:port"),
        ({"REGISTRY_HTTP_ADDR": ":٣٣"}, "http.addr (from REGISTRY_HTTP_ADDR): expected host:port"),
        ({"REGISTRY_STORAGE_DELETE_ENABLED": "sure"}, "storage.delete.enabled (from REGISTRY_STORAGE_DELETE_ENABLED)"),
        ({"REGISTRY_LOG_LEVEL": "loud"}, "log.level (from REGISTRY_LOG_LEVEL): expected one of"),
        ({"REGISTRY_HTTP_NOSUCHKEY": "1"}, "http.nosuchkey (from REGISTRY_HTTP_NOSUCHKEY): unknown key"),
        ({"REGISTRY_HTTP_ADDR_PORT": "1"}, "REGISTRY_HTTP_ADDR_PORT: http.addr is not a section"),
        ({"REGISTRY_HTTP__ADDR": "1"}, "REGISTRY_HTTP__ADDR: malformed variable name"),
    ],
)
def test_bad_environment_override_names_key_and_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    path = write(tmp_path, {"http": {"addr": "127.0.0.1:5000"}})
    with pytest.raises(ConfigError) as raised:
        load(path, env)
    assert str(raised.value).startswith(message)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yml: cannot read the configuration file: No such file"):
        load(str(tmp_path / "missing.yml"), {})
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load(str(tmp_path), {})  # a directory


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yml: invalid YAML"):
        load_yaml(tmp_path, "http: {addr: [\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_yaml(tmp_path, "- just\n- a list\n")


# --- dump --------------------------------------------------------------------------------------------------------


def test_dump_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    original = load_yaml(
        tmp_path,
        {
            "storage": {"filesystem": {"rootdirectory": "d"}, "delete": {"enabled": True}},
            "http": {"addr": ":5005", "workers": 3, "secret": "x", "headers": {"X-A": ["1", "2"]}},
            "database": {"url": "postgresql://u:pw@h/db"},
            "log": {"level": "debug"},
        },
    )
    dumped = dump(original, show_secrets=True)
    assert load_yaml(tmp_path, dumped) == original


def test_dump_masks_secrets_by_default(tmp_path: Path) -> None:
    config = load_yaml(
        tmp_path,
        {
            "storage": {"s3": {"bucket": "b", "secretkey": "TOPSECRET"}},
            "http": {"secret": "TOPSECRET"},
            "database": {"url": "postgresql://u:TOPSECRET@h/db"},
        },
    )
    text = yaml.safe_dump(dump(config))
    assert "TOPSECRET" not in text
    assert "bucket: b" in text
    assert "TOPSECRET" in yaml.safe_dump(dump(config, show_secrets=True))


def test_config_is_picklable_for_spawned_workers(tmp_path: Path) -> None:
    import pickle

    config = load(None, {"REGISTRY_HTTP_SECRET": "s"})
    assert pickle.loads(pickle.dumps(config)) == config
    assert os.path.isabs(config.storage.options["rootdirectory"])


# --- the schema ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2.5s", 2.5), (7, 7.0)]
)
def test_go_durations(tmp_path: Path, text: str | int, seconds: float) -> None:
    config = load_yaml(tmp_path, {"http": {"draintimeout": text}})
    assert config.http.draintimeout == seconds
    assert load_yaml(tmp_path, dump(config)).http.draintimeout == seconds


def test_dump_writes_durations_that_load_back(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, {"http": {"draintimeout": 0.00001}})
    assert dump(config)["http"]["draintimeout"] == "0.00001s"
    assert load_yaml(tmp_path, dump(config)).http.draintimeout == 0.00001


def test_dump_leaves_ignored_keys_out_and_keeps_the_driver_section(tmp_path: Path) -> None:
    config = load_yaml(
        tmp_path,
        {
            "storage": {"gcs": {"bucket": "b", "region": None}, "cache": {}},
            "redis": {"addr": "x"},
            "log": {"hooks": []},
        },
    )
    dumped = dump(config)
    assert "redis" not in dumped
    assert "cache" not in dumped["storage"]
    assert "hooks" not in dumped["log"]
    assert dumped["storage"]["gcs"] == {"bucket": "b", "region": None}
    assert load_yaml(tmp_path, dumped).storage == config.storage


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"http": {"tls": {"letsencrypt": {"cachefile": "x"}}}}, "http.tls.letsencrypt: not supported yet"),
        ({"http": {"draintimeout": "-1s"}}, "http.draintimeout: expected a duration"),
        ({"http": {"headers": {"X-A": ["one\ntwo"]}}}, "http.headers.X-A: expected header values as text on one line"),
        ({"http": {"tls": "on"}}, "http.tls: expected a mapping, got 'on'"),
        ({"storage": {"filesystem": {"rootdirectory": ""}}}, "storage.filesystem.rootdirectory: expected a non-empty"),
        ({"log": {"accesslog": {"disabled": True, "format": "json"}}}, "log.accesslog.format: unknown key"),
        ({"auth": {"token": {"realm": "x", "service": "s", "issuer": "i"}}}, "auth.token: no key to check tokens"),
        (
            {
                "auth": {
                    "htpasswd": {"path": "/etc/hostname"},
                    "token": {"service": "s", "issuer": "i", "jwks": "/etc/hostname", "realm": "r"},
                }
            },
            "auth: an auth section needs exactly one",
        ),
        ({"auth": {"htpasswd": {"realm": "x"}}}, "auth.htpasswd.path: "),
        ({"auth": None}, "auth: an auth section needs a backend"),
        ({"access": [{"who": "a", "repositories": ["*"], "actions": ["pull"]}]}, "access: rules need an auth section"),
    ],
)
def test_more_bad_keys_named(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, data)
    assert str(raised.value).startswith(message)


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, {"http": {"workers": 0, "addr": 1}, "log": {"level": "loud"}})
    assert str(raised.value).splitlines() == [
        "log.level: expected one of error, warn, info, debug, got 'loud'",
        "http.addr: expected a non-empty string, got 1",
        "http.workers: expected a positive integer, got 0",
    ]


def test_environment_names_the_variable_for_keys_inside_what_it_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(None, {"REGISTRY_HTTP_HEADERS": "{X-A: {b: 1}}"})
    assert str(raised.value).startswith("http.headers.X-A (from REGISTRY_HTTP_HEADERS): expected a list of values")
    with pytest.raises(ConfigError) as raised:
        load(None, {"REGISTRY_HTTP_ADDR_PORT": "1"})
    assert str(raised.value).startswith("http.addr (from REGISTRY_HTTP_ADDR_PORT): expected a non-empty string")


def test_environment_reads_ignored_sections_and_selects_no_shared_key(tmp_path: Path) -> None:
    config = load(None, {"REGISTRY_REDIS_ADDR": "redis:6379", "REGISTRY_LOG_FORMATTER": "json"})
    assert config.notices == ["redis: not supported yet; ignored (caches are per process)"]
    assert config.log.formatter == "json"
    with pytest.raises(ConfigError, match="REGISTRY_STORAGE: 'delete' is not a storage driver"):
        load(None, {"REGISTRY_STORAGE": "delete"})


def test_docs_key_table_is_the_one_the_schema_gives() -> None:
    """The table in docs/configuration.md is generated; edit the schema's descriptions, then run the command."""
    document = DOCS.read_text(encoding="utf-8")
    assert reference.with_table(document) == document, (
        "docs/configuration.md's key table differs from the schema: "
        "python -m docker_registry.server.config.reference docs/configuration.md"
    )


def test_every_documented_key_says_what_it_does() -> None:
    rows = list(reference.rows())
    assert all(row.meaning for row in rows), [row.key for row in rows if not row.meaning]
    assert "`storage.filesystem.rootdirectory`" in {row.key for row in rows}
    assert not any("letsencrypt" in row.key or "cache" in row.key for row in rows)  # refused and ignored keys


def test_health_and_debug_sections(tmp_path: Path) -> None:
    config = load_yaml(
        tmp_path,
        {
            "health": {"storagedriver": {"interval": "2s", "threshold": 2}, "database": {"enabled": False}},
            "http": {"debug": {"addr": ":5001", "prometheus": {"enabled": True}}},
            "log": {"formatter": "logfmt"},
        },
    )
    assert (config.health.storagedriver.interval, config.health.storagedriver.threshold) == (2.0, 2)
    assert not config.health.database.enabled
    assert config.http.debug.host_port() == (None, 5001)
    assert config.http.debug.prometheus.path == "/metrics"
    assert config.log.formatter == "logfmt"
    assert not config.notices


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"http": {"debug": {"prometheus": {"enabled": True}}}}, "prometheus.enabled needs addr"),
        ({"log": {"formatter": "xml"}}, "text, json or logfmt"),
        ({"health": {"storagedriver": {"interval": 0}}}, "interval must be above zero"),
        ({"http": {"debug": {"addr": ":1", "prometheus": {"path": "metrics"}}}}, "a URL path"),
    ],
)
def test_bad_observability_settings_are_refused(tmp_path: Path, section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_yaml(tmp_path, section)


# --- probe: what `config` prints, keys a typo makes, YAML's own surprises -----------------------------------------


def test_dump_masks_health_check_credentials_and_declared_driver_secrets(tmp_path: Path) -> None:
    """`config` printed a health.http check's URL password and its Authorization header, and storage.s3.accesskey,
    which the schema declares a secret: driver options were masked only by their names."""
    config = load_yaml(
        tmp_path,
        {
            "storage": {"s3": {"bucket": "b", "accesskey": "AKIATOPSECRET", "secretkey": "TOPSECRET"}},
            "health": {
                "http": [
                    {
                        "uri": "https://admin:TOPSECRET@backend.example.com/health",
                        "headers": {"Authorization": ["Basic TOPSECRET"]},
                    }
                ]
            },
        },
    )
    dumped = dump(config)
    assert "TOPSECRET" not in yaml.safe_dump(dumped)
    check = dumped["health"]["http"][0]
    assert check["uri"] == "https://admin:***@backend.example.com/health"
    assert check["headers"] == {"Authorization": ["***"]}
    assert dumped["storage"]["s3"]["bucket"] == "b"
    shown = dump(config, show_secrets=True)
    assert shown["storage"]["s3"]["accesskey"] == "AKIATOPSECRET"
    assert (load_yaml(tmp_path, shown).storage, load_yaml(tmp_path, shown).health) == (config.storage, config.health)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"storage": {"filesystem": {"rootdirectori": "/var/lib/registry"}}},
            "storage.filesystem.rootdirectori: unknown",
        ),
        ({"storage": {"s3": {"bucket": "b", "regoin": "eu-west-1"}}}, "storage.s3.regoin: unknown key"),
    ],
)
def test_unknown_keys_of_the_built_in_drivers_are_errors(tmp_path: Path, data: Any, message: str) -> None:
    """A misspelt rootdirectory was taken silently: the registry stored everything under ./data instead."""
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, data)
    assert str(raised.value).startswith(message)
    with pytest.raises(
        ConfigError, match=r"storage.filesystem.root \(from REGISTRY_STORAGE_FILESYSTEM_ROOT\): unknown"
    ):
        load(None, {"REGISTRY_STORAGE_FILESYSTEM_ROOT": "/srv"})
    assert load_yaml(tmp_path, {"storage": {"gcs": {"anything": 1}}}).storage.options == {"anything": 1}  # its own


def test_the_container_healthcheck_variable_is_not_a_key(tmp_path: Path) -> None:
    """docs/deployment.md tells operators to set REGISTRY_HEALTHCHECK_URL (the image's HEALTHCHECK reads it); the
    registry then warned at every start that it names no section and was ignored."""
    config = load(None, {"REGISTRY_HEALTHCHECK_URL": "http://127.0.0.1:5001/readyz"})
    assert config.notices == []


def test_a_key_given_twice_is_told_at_start_and_the_last_is_used(tmp_path: Path) -> None:
    """YAML kept the second `http:` section and dropped the first one's keys without a word. Distribution keeps the
    last one too (its own sample configuration repeats `storage:` under `middleware:`), so the file loads, with a
    warning naming the line."""
    config = load_yaml(tmp_path, "http:\n  addr: :5001\nstorage: {}\nhttp:\n  workers: 2\n")
    assert (config.http.addr, config.http.workers) == ("127.0.0.1:5000", 2)  # the last `http:` only, as in Go
    assert f"{tmp_path / 'config.yml'}: line 4: the key 'http' is given twice in one mapping; the last is used" in (
        config.notices
    )
    twice = load_yaml(tmp_path, "http: {addr: ':5001', addr: ':5002'}\n")
    assert twice.http.addr == ":5002"
    assert any("the key 'addr' is given twice" in notice for notice in twice.notices)
    merged = load_yaml(tmp_path, "http: {<<: {addr: ':5001', workers: 2}, workers: 3}\n")
    assert (merged.http.addr, merged.http.workers) == (":5001", 3)  # a merge's keys are overridden, as YAML says
    assert not any("twice" in notice for notice in merged.notices)


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, "http: {addr: [\n")
    assert len(str(raised.value).splitlines()) == 1
    assert "line 2, column 1" in str(raised.value)


@pytest.mark.parametrize(
    ("written", "mask"),
    [("0022", 0o022), ("022", 0o022), ("'0027'", 0o027), ("0", 0), ("7", 0o7), ("0777", 0o777)],
)
def test_umask_is_octal_however_it_is_written(tmp_path: Path, written: str, mask: int) -> None:
    """`umask: 77` (as the shell's `umask 77`) was the decimal 77, 0o115: blobs written 0662, writable by others."""
    config = load_yaml(tmp_path, f"storage: {{umask: {written}}}\n")
    assert config.storage.umask == mask
    assert load(None, {"REGISTRY_STORAGE_UMASK": written.strip("'")}).storage.umask == mask
    assert load_yaml(tmp_path, dump(config)).storage.umask == mask
    with pytest.raises(ConfigError, match=r"storage\.umask: expected an octal umask"):
        load_yaml(tmp_path, "storage: {umask: 8}\n")


@pytest.mark.parametrize("written", ["22", "77", "23"])
def test_a_bare_umask_number_from_8_up_is_refused_as_ambiguous(tmp_path: Path, written: str) -> None:
    """A person writes `umask: 77` for 0o077, a tool dumping the mask 0o027 to YAML writes `umask: 23`: reading bare
    numbers either way silently gave the other's files another mask (23 was 0o027 before 364815f, 0o023 after)."""
    for load_it in (
        lambda: load_yaml(tmp_path, f"storage: {{umask: {written}}}\n"),
        lambda: load(None, {"REGISTRY_STORAGE_UMASK": written}),
    ):
        with pytest.raises(ConfigError, match=rf"storage\.umask.*: the number {written} could be octal digits"):
            load_it()


def test_numbers_with_a_leading_zero_are_not_octal(tmp_path: Path) -> None:
    """YAML 1.1 reads `0123` as the octal 83: a secret or a count written so became another value."""
    config = load_yaml(tmp_path, "http: {secret: 0123}\n")
    assert config.http.secret == "0123"
    with pytest.raises(ConfigError, match=r"http\.workers: expected a positive integer, got '010'"):
        load_yaml(tmp_path, "http: {workers: 010}\n")


@pytest.mark.parametrize(
    ("addr", "debug"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        (":5000", "127.0.0.1:5000"),
        ("127.0.0.1:5000", "0.0.0.0:5000"),
        ("[::]:5000", "[::1]:5000"),
    ],
)
def test_debug_listener_on_the_main_port_is_a_configuration_error(tmp_path: Path, addr: str, debug: str) -> None:
    """`serve` started, its first worker failed to bind the debug port its own main listener held, printed a
    traceback and the registry stopped (exit 1)."""
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, {"http": {"addr": addr, "debug": {"addr": debug}}})
    assert str(raised.value).startswith(f"http: debug.addr {debug!r} is the port http.addr {addr!r} listens on")
    config = load_yaml(tmp_path, {"http": {"addr": addr, "debug": {"addr": debug.replace(":5000", ":5001")}}})
    assert config.http.debug.addr is not None


def test_secret_query_parameters_of_urls_are_masked(tmp_path: Path) -> None:
    """libpq takes the password as a query parameter, and webhooks often carry their token in the query: `config`
    printed them, and `serve` logged the database URL with its password at every start."""
    config = load_yaml(
        tmp_path,
        {
            "database": {"url": "postgresql://registry@db/registry?sslmode=require&password=TOPSECRET"},
            "notifications": {"endpoints": [{"name": "a", "url": "https://hooks.example.com/e?token=TOPSECRET&x=1"}]},
        },
    )
    dumped = dump(config)
    assert dumped["database"]["url"] == "postgresql://registry@db/registry?sslmode=require&password=***"
    # a receiver's query is all its own (`hide_url_secrets`): every value masked, not only secret-looking ones
    assert dumped["notifications"]["endpoints"][0]["url"] == "https://hooks.example.com/e?token=***&x=***"
    assert "TOPSECRET" in yaml.safe_dump(dump(config, show_secrets=True))
    assert (
        hide_password("postgresql://u:pw@h/db?application_name=r#f") == "postgresql://u:***@h/db?application_name=r#f"
    )


def test_required_keys_and_lists_are_worded_as_the_other_errors(tmp_path: Path) -> None:
    """pydantic's own words showed through: 'auth.token.service: Field required', 'http.tls.clientcas (from
    REGISTRY_HTTP_TLS_CLIENTCAS): Input should be a valid list'."""
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, {"auth": {"token": {"realm": "https://auth", "jwks": "/etc/hostname"}}})
    assert str(raised.value).splitlines() == [
        "auth.token.service: required, missing",
        "auth.token.issuer: required, missing",
    ]
    with pytest.raises(ConfigError) as raised:
        load(
            None,
            {
                "REGISTRY_HTTP_TLS_CERTIFICATE": "/c.pem",
                "REGISTRY_HTTP_TLS_KEY": "/k.pem",
                "REGISTRY_HTTP_TLS_CLIENTCAS": "/ca.pem",
            },
        )
    assert str(raised.value) == "http.tls.clientcas (from REGISTRY_HTTP_TLS_CLIENTCAS): expected a list, got '/ca.pem'"


@pytest.mark.parametrize(
    ("affinity", "limit", "workers"),
    [
        (8, None, 8),
        (2, None, 2),
        (8, "max 100000", 8),
        (8, "200000 100000", 2),
        (8, "150000 100000", 2),
        (1, "50000 100000", 1),
    ],
)
def test_default_workers_are_the_cores_the_process_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, affinity: int, limit: str | None, workers: int
) -> None:
    """One worker per core counted the host's cores: a container given 2 CPUs of a 64-core host (`--cpus 2`,
    `--cpuset-cpus 0,1`, a Kubernetes limit) started 64 workers."""
    from docker_registry.server.config import schema

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    cpu_max = tmp_path / "cpu.max"
    if limit is not None:
        cpu_max.write_text(limit + "\n")
    monkeypatch.setattr(schema, "CGROUP_CPU_LIMIT", str(cpu_max), raising=False)
    config = load(None, {})
    assert config.http.worker_count == workers
    assert dump(config)["http"]["workers"] == workers
    assert load(None, {"REGISTRY_HTTP_WORKERS": "3"}).http.worker_count == 3


def test_registry_auth_selects_the_backend_as_in_distribution_s_examples(tmp_path: Path) -> None:
    """`docker run -e REGISTRY_AUTH=htpasswd -e REGISTRY_AUTH_HTPASSWD_REALM=... -e REGISTRY_AUTH_HTPASSWD_PATH=...`,
    Distribution's documented way to turn on Basic authentication, was refused: 'REGISTRY_AUTH_HTPASSWD_PATH: auth
    is not a section, cannot set auth.htpasswd.path'."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    env = {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd),
    }
    config = load(None, env)
    assert config.auth is not None
    assert config.auth.htpasswd is not None
    assert (config.auth.htpasswd.realm, config.auth.htpasswd.path) == ("Registry Realm", str(htpasswd))
    file_with_token = {"auth": {"token": {"realm": "r", "service": "s", "issuer": "i", "jwks": str(htpasswd)}}}
    assert load_yaml(tmp_path, file_with_token, env).auth.token is None  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"^auth\.htpasswd\.path \(from REGISTRY_AUTH\): required, missing$"):
        load(None, {"REGISTRY_AUTH": "htpasswd"})
    with pytest.raises(ConfigError, match=r"^auth\.silly \(from REGISTRY_AUTH\): not supported"):
        load(None, {"REGISTRY_AUTH": "silly"})


def test_errors_about_secrets_do_not_print_them(tmp_path: Path) -> None:
    """`http.secret: 987654321` (YAML reads a number) was refused with 'expected a non-empty string, got 987654321':
    the secret, on stderr and in the logs of whatever started the registry."""
    with pytest.raises(ConfigError) as raised:
        load_yaml(
            tmp_path,
            "http: {secret: 987654321}\nproxy: {remoteurl: 'https://r', username: u, password: 31415926}\n"
            "storage: {s3: {bucket: b, accesskey: AK, secretkey: 271828}}\n",
        )
    message = str(raised.value)
    for secret in ("987654321", "31415926", "271828"):
        assert secret not in message
    assert "http.secret: expected a non-empty string, got a value of type int (not shown)" in message.splitlines()
    assert "proxy.password: expected a non-empty string, got a value of type int (not shown)" in message.splitlines()
    with pytest.raises(ConfigError, match=r"http\.workers: expected a positive integer, got 'x'"):
        load_yaml(tmp_path, {"http": {"workers": "x"}})


def test_debug_listener_on_the_same_port_of_another_family_is_fine(tmp_path: Path) -> None:
    """IPv6 listeners are bound v6-only: "[::]:5000" and "127.0.0.1:5000" do not share an address."""
    config = load_yaml(tmp_path, {"http": {"addr": "[::]:5000", "debug": {"addr": "127.0.0.1:5000"}}})
    assert config.http.debug.addr == "127.0.0.1:5000"


def test_log_fields_take_numbers_and_booleans_as_distribution_does(tmp_path: Path) -> None:
    """Distribution's log.fields take any value; `replicas: 3` was refused ('expected a non-empty string, got 3')."""
    config = load_yaml(tmp_path, "log: {fields: {service: registry, replicas: 3, canary: true, weight: 0.5}}\n")
    assert config.log.fields == {"service": "registry", "replicas": "3", "canary": "true", "weight": "0.5"}
    assert load_yaml(tmp_path, dump(config)).log.fields == config.log.fields
    with pytest.raises(ConfigError, match=r"log\.fields\.a: expected a non-empty string or a number, got \[1\]"):
        load_yaml(tmp_path, {"log": {"fields": {"a": [1]}}})


def test_an_encrypted_tls_key_is_a_configuration_error_not_a_prompt(tmp_path: Path) -> None:
    """OpenSSL prompted 'Enter PEM pass phrase:' on the terminal, where `serve` waited; without a terminal it said
    '[Errno 22] Invalid argument'."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from docker_registry.server.runtime.tls import server_context

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    encrypted = serialization.BestAvailableEncryption(b"hunter2")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    (tmp_path / "key.pem").write_bytes(pem)
    config = load_yaml(tmp_path, {"http": {"tls": {"certificate": "cert.pem", "key": "key.pem"}}})
    with pytest.raises(ConfigError) as raised:
        server_context(config.http)
    assert str(raised.value).startswith(f"http.tls.key: {str(tmp_path / 'key.pem')!r} is encrypted with a passphrase")
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "key.pem").write_bytes(plain)
    assert server_context(config.http) is not None


@pytest.mark.parametrize(
    "section",
    [
        {"notifications": {"endpoints": [{"name": "a", "url": "https://hook:99999/e?token=TOPSECRET"}]}},
        {"notifications": {"endpoints": [{"name": "a", "url": "https://hook:0x50/e"}]}},
        {"health": {"http": [{"uri": "https://user:TOPSECRET@checked:70000/"}]}},
        {"proxy": {"remoteurl": "https://mirror:123456"}},
    ],
    ids=["endpoint-port-out-of-range", "endpoint-port-not-a-number", "check-port", "upstream-port"],
)
def test_a_url_the_registry_cannot_request_is_a_configuration_error_that_hides_its_secrets(
    tmp_path: Path, section: dict[str, object]
) -> None:
    """Only the scheme and host were checked: a port out of range or not a number passed `config`, then the worker
    building the webhook's or check's request stopped at start with a traceback (yarl's ValueError). And a URL refused
    for its form was printed whole, password and token included."""
    with pytest.raises(ConfigError, match="expected an http:// or https:// URL") as raised:
        load_yaml(tmp_path, section)
    assert "TOPSECRET" not in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_a_refused_url_is_shown_without_its_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_yaml(tmp_path, {"notifications": {"endpoints": [{"name": "a", "url": "ftp://u:PW@hook/x?token=TOKEN"}]}})
    assert str(raised.value) == (
        "notifications.endpoints.0.url: expected an http:// or https:// URL, got 'ftp://u:***@hook/x?token=***'"
    )
