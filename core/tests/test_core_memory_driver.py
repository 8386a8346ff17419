"""The in-memory driver against the shared driver suite."""

from __future__ import annotations

import pytest

from docker_registry.drivers.memory import Driver
from docker_registry.testing import DriverTestSuite


class TestMemoryDriver(DriverTestSuite):
    streams_in_constant_memory = False  # it keeps every object in memory by design

    @pytest.fixture
    def driver(self) -> Driver:
        return Driver()
