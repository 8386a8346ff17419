"""Tests every storage driver must pass, for driver packages to run against their own backend.

Needs pytest and pytest-asyncio (the core package itself depends on nothing). In a driver package::

    import pytest
    from docker_registry.drivers.mydriver import Driver
    from docker_registry.testing import DriverTestSuite

    class TestMyDriver(DriverTestSuite):
        @pytest.fixture
        def driver(self, tmp_path):
            return Driver({"rootdirectory": str(tmp_path)})
"""

from .driver_suite import DriverTestSuite

__all__ = ["DriverTestSuite"]
