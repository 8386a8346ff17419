"""The error tree of the original docker-registry-core, kept name for name so driver authors recognise it.

`FileNotFoundError`, `NotImplementedError` and `ConnectionError` deliberately shadow the builtins of the same
name inside this module: callers import them qualified (`exceptions.FileNotFoundError`), as in the original.
"""

from __future__ import annotations

import builtins

__all__ = [
    "BrokenError",
    "ConfigError",
    "ConnectionError",
    "FileNotFoundError",
    "MissingError",
    "NotImplementedError",
    "UnreachableError",
    "UnspecifiedError",
    "UsageError",
    "WrongArgumentsError",
]


class UnspecifiedError(Exception):
    """Root of every error the registry core raises; carries a human-readable message."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(UnspecifiedError):
    """The caller asked for something that cannot be done as asked."""


class NotImplementedError(UsageError):  # noqa: A001 - the original's name
    """A driver or feature that does not exist (or a method a driver does not offer)."""


class FileNotFoundError(UsageError, builtins.FileNotFoundError):  # noqa: A001 - the original's name
    """The object does not exist. Also a builtin FileNotFoundError, so generic code can catch it."""

    def __init__(self, message: str = "") -> None:
        UsageError.__init__(self, message)


class WrongArgumentsError(UsageError):
    """An argument is malformed: a path that could escape the driver root, a bad digest, a bad range."""


class ConfigError(UsageError):
    """The configuration is invalid; the message names the offending key."""


class ConnectionError(UnspecifiedError):  # noqa: A001 - the original's name
    """The storage backend could not be used."""


class UnreachableError(ConnectionError):
    """The backend did not answer."""


class MissingError(ConnectionError):
    """The backend answered, but the bucket, container or root it should hold is not there."""


class BrokenError(ConnectionError):
    """The backend answered with something that makes no sense."""
