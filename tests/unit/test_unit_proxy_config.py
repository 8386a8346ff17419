"""The `proxy` section: mirror mode or prefixed upstreams, checked at load, passwords masked in `config` output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_registry.core.exceptions import ConfigError
from docker_registry.server.config import dump, load


def load_proxy(tmp_path: Path, proxy: dict[str, Any]) -> Any:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"version": 0.1, "proxy": proxy}))
    return load(str(path), environ={})


def test_mirror_mode_with_distributions_keys(tmp_path: Path) -> None:
    config = load_proxy(
        tmp_path, {"remoteurl": "https://registry-1.docker.io/", "username": "u", "password": "p", "ttl": "5m"}
    )
    assert config.proxy.remoteurl == "https://registry-1.docker.io"
    assert config.proxy.ttl == 300.0
    assert config.notices == []


def test_upstreams_and_masked_passwords(tmp_path: Path) -> None:
    upstreams = [
        {"prefix": "hub", "remoteurl": "https://registry-1.docker.io", "username": "u", "password": "s3cret"},
        {"prefix": "ghcr", "remoteurl": "https://ghcr.io", "ttl": "1h"},
    ]
    config = load_proxy(tmp_path, {"upstreams": upstreams})
    assert [u.prefix for u in config.proxy.upstreams] == ["hub", "ghcr"]
    assert "s3cret" not in str(dump(config))
    assert "s3cret" in str(dump(config, show_secrets=True))


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ({"remoteurl": "https://a", "upstreams": [{"prefix": "x", "remoteurl": "https://b"}]}, "not both"),
        ({}, "give remoteurl"),
        ({"remoteurl": "ftp://a"}, "proxy.remoteurl"),
        ({"remoteurl": "https://user:pw@a"}, "credentials"),
        ({"remoteurl": "https://a", "username": "u"}, "go together"),
        ({"upstreams": [{"prefix": "/x", "remoteurl": "https://a"}]}, "prefix"),
        (
            {"upstreams": [{"prefix": "a", "remoteurl": "https://a"}, {"prefix": "a/b", "remoteurl": "https://b"}]},
            "overlaps",
        ),
        ({"upstreams": [{"prefix": "a", "remoteurl": "https://a", "password": "p"}]}, "go together"),
    ],
)
def test_bad_proxy_sections_are_refused_naming_the_key(tmp_path: Path, proxy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_proxy(tmp_path, proxy)
