"""Scope parsing of Docker's token specification: what clients send in `scope`, and what tokens carry in `access`."""

from __future__ import annotations

import pytest

from docker_registry.server.auth.scopes import Scope, claims, merged, parse, parse_all


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:team-a/app:pull", Scope("repository", "team-a/app", ("pull",))),
        ("repository:team-a/app:pull,push", Scope("repository", "team-a/app", ("pull", "push"))),
        ("repository:a:pull,pull,,push", Scope("repository", "a", ("pull", "push"))),
        ("repository(plugin):a/b:pull", Scope("repository", "a/b", ("pull",))),
        ("repository:host:5000/a:pull", Scope("repository", "host:5000/a", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("repository:a", None),
        ("repository::pull", None),
        (":a:pull", None),
        ("repository:a:", None),
        ("nonsense", None),
    ],
)
def test_parse(text: str, expected: Scope | None) -> None:
    assert parse(text) == expected


def test_parse_all_splits_on_spaces_and_drops_nonsense() -> None:
    scopes = parse_all(["repository:a:pull repository:b:push", "x", "registry:catalog:*"])
    assert [str(s) for s in scopes] == ["repository:a:pull", "repository:b:push", "registry:catalog:*"]


def test_merged_gathers_actions_per_resource_in_order() -> None:
    grants = [("repository", "a", "pull"), ("repository", "a", "push"), ("repository", "b", "pull")]
    assert [str(s) for s in merged(grants)] == ["repository:a:pull,push", "repository:b:pull"]


def test_claims() -> None:
    access = [{"type": "repository", "name": "a", "actions": ["pull", "push", 3]}]
    assert claims(access) == {("repository", "a", "pull"), ("repository", "a", "push")}
    assert claims(None) == frozenset()
    # Null or missing members are empty, as Go reads them (a scope a Go service granted nothing of).
    assert claims([{"type": "repository", "name": "a"}, {"type": "repository", "name": "b", "actions": None}]) == set()
    for bad in ("all", [1], [{"type": 1, "name": "a", "actions": []}], [{"type": "repository", "actions": "pull"}]):
        with pytest.raises(ValueError, match="access"):
            claims(bad)
