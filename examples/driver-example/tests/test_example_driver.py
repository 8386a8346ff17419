"""The example driver passes the shared suite and is found by name both ways a driver can be found."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from docker_registry.core import driver
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
