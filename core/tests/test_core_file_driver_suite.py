"""The filesystem driver against the shared driver suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from docker_registry.drivers.file import Driver
from docker_registry.testing import DriverTestSuite


class TestFileDriver(DriverTestSuite):
    @pytest.fixture
    def driver(self, tmp_path: Path) -> Driver:
        return Driver({"rootdirectory": str(tmp_path / "root")})
