"""Finding drivers by name: entry points first, then modules under docker_registry.drivers."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from docker_registry.core import driver, exceptions
from docker_registry.drivers import file, memory


@pytest.mark.parametrize(
    ("name", "cls"),
    [("file", file.Driver), ("filesystem", file.Driver), ("memory", memory.Driver), ("inmemory", memory.Driver)],
)
def test_fetch_builtin_drivers_by_entry_point(name: str, cls: type) -> None:
    assert driver.fetch(name) is cls
    assert name in driver.available()


def test_fetch_by_module_name_without_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "_entry_points", dict)
    assert driver.fetch("file") is file.Driver
    assert driver.fetch("memory") is memory.Driver
    assert {"file", "memory"} <= set(driver.available())


@pytest.mark.parametrize("name", ["nope", "", "../file", "file.Driver", "no-such"])
def test_unknown_driver_lists_the_available_ones(name: str) -> None:
    with pytest.raises(exceptions.NotImplementedError) as info:
        driver.fetch(name)
    assert f"no driver named {name!r}" in str(info.value)
    for known in ("file", "memory"):
        assert known in str(info.value)


def test_entry_point_that_is_not_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = importlib.metadata.EntryPoint("bogus", "builtins:int", driver.ENTRY_POINT_GROUP)
    monkeypatch.setattr(driver, "_entry_points", lambda: {"bogus": bogus})
    with pytest.raises(exceptions.NotImplementedError, match="does not provide"):
        driver.fetch("bogus")


def _driver_module(root: Path, name: str, source: str) -> None:
    package = root / "docker_registry" / "drivers"
    package.mkdir(parents=True, exist_ok=True)
    (package / f"{name}.py").write_text(source)


def test_module_without_driver_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _driver_module(tmp_path, "nodriverclass", "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(exceptions.NotImplementedError, match="does not provide"):
        driver.fetch("nodriverclass")


def test_module_with_a_missing_dependency_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _driver_module(tmp_path, "needsdependency", "import no_such_dependency_for_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_for_tests"):
        driver.fetch("needsdependency")


def test_driver_options_are_kept() -> None:
    d = driver.fetch("memory")({"some": "option"})
    assert d.options == {"some": "option"}
