"""The `proxy` section: mirror mode or prefixed upstreams, checked at load, passwords masked in `config` output."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from proc_stat import owned_directories

from docker_registry.core.exceptions import ConfigError
from docker_registry.server.config import dump, load
from docker_registry.server.proxy import setup
from docker_registry.server.registry import process_identity


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


def test_spools_of_runs_killed_with_sigkill_are_removed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master killed with SIGKILL could not remove its temporary spool (a probe found a 10 MiB partial blob left
    in one, never reused): the next start removes the spools whose owner is dead, and leaves a live one's."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    owners = owned_directories(temporary, setup.SPOOL_PREFIX, ["abandoned", "alive"])
    if owners is None:
        pytest.skip("needs /proc to tell who made a spool")
    (temporary / f"{setup.SPOOL_PREFIX}abandoned" / "partial-blob").write_bytes(b"x" * 1024)
    config = load_proxy(tmp_path, {"remoteurl": "https://registry-1.docker.io/"})
    setup.prepare(config.proxy)
    left = sorted(path.name for path in temporary.iterdir())
    assert left == sorted([f"{setup.SPOOL_PREFIX}alive", Path(config.proxy.spooldirectory).name])
    assert (Path(config.proxy.spooldirectory) / process_identity.OWNER).read_text() == owners["alive"]
