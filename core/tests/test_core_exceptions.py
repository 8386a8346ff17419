"""The error tree keeps the original docker-registry-core's names and parents."""

from __future__ import annotations

import builtins

import pytest

from docker_registry.core import exceptions

TREE = {
    "UnspecifiedError": Exception,
    "UsageError": exceptions.UnspecifiedError,
    "NotImplementedError": exceptions.UsageError,
    "FileNotFoundError": exceptions.UsageError,
    "WrongArgumentsError": exceptions.UsageError,
    "ConfigError": exceptions.UsageError,
    "ConnectionError": exceptions.UnspecifiedError,
    "UnreachableError": exceptions.ConnectionError,
    "MissingError": exceptions.ConnectionError,
    "BrokenError": exceptions.ConnectionError,
}


def test_exports_exactly_the_tree() -> None:
    assert sorted(exceptions.__all__) == sorted(TREE)


@pytest.mark.parametrize(("name", "parent"), TREE.items())
def test_names_and_parents(name: str, parent: type) -> None:
    cls = getattr(exceptions, name)
    assert issubclass(cls, parent)
    assert issubclass(cls, exceptions.UnspecifiedError) or cls is exceptions.UnspecifiedError
    error = cls("something went wrong")
    assert str(error) == error.message == "something went wrong"
    with pytest.raises(exceptions.UnspecifiedError):
        raise error


def test_file_not_found_is_also_the_builtin() -> None:
    error = exceptions.FileNotFoundError("missing/object")
    assert isinstance(error, builtins.FileNotFoundError)
    assert isinstance(error, OSError)
    assert str(error) == "missing/object"
    with pytest.raises(builtins.FileNotFoundError):
        raise error


def test_connection_errors_are_not_usage_errors() -> None:
    assert not issubclass(exceptions.ConnectionError, exceptions.UsageError)
    assert not issubclass(exceptions.ConnectionError, builtins.ConnectionError)
