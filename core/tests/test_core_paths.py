"""Path validation: nothing a client sends may name a file outside a driver's root."""

from __future__ import annotations

import pytest

from docker_registry.core.exceptions import WrongArgumentsError
from docker_registry.core.paths import check_path, check_prefix, immediate_children, join


@pytest.mark.parametrize("path", ["a", "a/b/c.d", "..a", "a..", "a/...", ".hidden", "ünï/ファイル", "a b", "x" * 300])
def test_accepts_safe_relative_paths(path: str) -> None:
    assert check_path(path) == path


ESCAPES = ["", ".", "..", "../x", "a/../b", "a/..", "/abs", "a//b", "a/", "a/./b", "a\\b", "..\\x"]
CONTROL = ["a\x00b", "a\nb", "a\x7f"]


@pytest.mark.parametrize("path", ESCAPES + CONTROL)
def test_refuses_paths_that_could_escape(path: str) -> None:
    with pytest.raises(WrongArgumentsError):
        check_path(path)


@pytest.mark.parametrize("path", [None, b"a", 1, ["a"]])
def test_refuses_non_strings(path: object) -> None:
    with pytest.raises(WrongArgumentsError):
        check_path(path)  # type: ignore[arg-type]


def test_prefix_allows_the_root_and_one_trailing_slash() -> None:
    assert check_prefix("") == ""
    assert check_prefix("a/") == "a"
    assert check_prefix("a/b") == "a/b"


@pytest.mark.parametrize("path", ["/", "a//", "../", "/a/", "a/../"])
def test_prefix_refuses_escapes(path: str) -> None:
    with pytest.raises(WrongArgumentsError):
        check_prefix(path)


def test_join_skips_the_root() -> None:
    assert join("", "a") == "a"
    assert join("a", "b", "c") == "a/b/c"
    assert join("", "") == ""


def test_immediate_children_of_a_flat_key_space() -> None:
    keys = ["a/b/c", "a/b/d", "a/e", "ab/f", "g"]
    assert immediate_children(keys, "") == ["a", "ab", "g"]
    assert immediate_children(keys, "a") == ["a/b", "a/e"]
    assert immediate_children(keys, "a/b") == ["a/b/c", "a/b/d"]
    assert immediate_children(keys, "a/b/c") == []
    assert immediate_children(keys, "missing") == []
