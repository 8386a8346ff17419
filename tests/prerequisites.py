"""What some tests need beyond `pip install -e ./core -e ".[test]"`: a missing prerequisite skips them with the
command that installs it, except under `CI=true`, where it fails them (a CI run must never pass by skipping)."""

from __future__ import annotations

import importlib.util
import os
from typing import NoReturn

import pytest

EXAMPLE_DRIVER = "docker_registry.drivers.example"
EXAMPLE_DRIVER_INSTALL = "pip install -e ./examples/driver-example"
PSYCOPG_INSTALL = "pip install -e '.[postgres]'"


def missing(problem: str) -> NoReturn:
    """Skip the test for `problem` (which says what to install), or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem} (CI=true: nothing may be skipped)", pytrace=False)
    pytest.skip(problem)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require_module(module: str, install: str) -> None:
    """Skip (or under CI fail) unless `module` can be imported; `install` is the command that provides it."""
    if not installed(module):
        missing(f"{module} is not installed: {install}")
