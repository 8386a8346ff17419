"""The example driver passes the shared suite and is found by name both ways a driver can be found."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from docker_registry.core import driver, exceptions
from docker_registry.drivers.example import Driver
from docker_registry.testing import DriverTestSuite


class TestExampleDriver(DriverTestSuite):
    @pytest.fixture
    def driver(self, tmp_path: Path) -> Driver:
        return Driver({"rootdirectory": str(tmp_path)})


def test_found_through_its_entry_point() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=driver.ENTRY_POINT_GROUP)}
    assert "example" in names
    assert driver.fetch("example") is Driver
    assert "example" in driver.available()


def test_found_through_the_namespace_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "_entry_points", dict)
    assert driver.fetch("example") is Driver
    assert "example" in driver.available()


class TestExampleDriverRedirecting(DriverTestSuite):
    """With `redirect_base` the driver still passes the whole suite; only downloads may go elsewhere."""

    @pytest.fixture
    def driver(self, tmp_path: Path) -> Driver:
        return Driver({"rootdirectory": str(tmp_path), "redirect_base": "http://cdn.example/objects/"})


async def test_no_redirect_without_redirect_base(tmp_path: Path) -> None:
    assert await Driver({"rootdirectory": str(tmp_path)}).content_redirect_url("blobs/sha256/ab/abcd/data") is None


async def test_redirect_url_is_the_base_and_the_quoted_path(tmp_path: Path) -> None:
    example = Driver({"rootdirectory": str(tmp_path), "redirect_base": "https://cdn.example/objects/"})
    url = await example.content_redirect_url("blobs/sha256/ab/abcd/name with space%")
    assert url == "https://cdn.example/objects/blobs/sha256/ab/abcd/name%20with%20space%25"


async def test_redirect_url_refuses_bad_paths(tmp_path: Path) -> None:
    example = Driver({"rootdirectory": str(tmp_path), "redirect_base": "http://cdn.example"})
    with pytest.raises(exceptions.WrongArgumentsError):
        await example.content_redirect_url("blobs/../../etc/passwd")


@pytest.mark.parametrize("base", ["ftp://cdn.example", "cdn.example/objects", 42])
def test_redirect_base_must_be_an_http_url(tmp_path: Path, base: object) -> None:
    with pytest.raises(exceptions.ConfigError, match="redirect_base must be an http"):
        Driver({"rootdirectory": str(tmp_path), "redirect_base": base})
