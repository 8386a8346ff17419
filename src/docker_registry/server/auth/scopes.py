"""Scopes of Docker's token specification: `repository:<name>:<action>[,<action>...]` and `registry:catalog:*`,
as clients ask for them (the `scope` of the `Bearer` challenge and of the token request) and as tokens grant them
(the `access` claim). A grant is a triple (type, name, action): a token allows the triples it lists, and
every action on a resource it lists with the action `*` (`tokens.Claims.allows`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REPOSITORY, REGISTRY, CATALOG, ALL = "repository", "registry", "catalog", "*"
Grant = tuple[str, str, str]
"""(resource type, resource name, action)."""


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def grants(self) -> list[Grant]:
        return [(self.type, self.name, action) for action in self.actions]

    def claim(self) -> dict[str, object]:
        """The scope as an entry of a token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse(text: str) -> Scope | None:
    """`type[(class)]:name:actions`; the name may hold `:` (a host with a port), so type and actions are split off
    the ends. Malformed text is None: a token request naming nonsense is granted nothing for it."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name or not actions:
        return None
    kind = kind.split("(", 1)[0]  # `repository(plugin)`: the resource class does not change the rights
    return Scope(kind, name, tuple(dict.fromkeys(a for a in actions.split(",") if a)))


def parse_all(values: Iterable[str]) -> list[Scope]:
    """Scopes from repeated `scope` parameters, each of which may hold several separated by spaces (OAuth2)."""
    return [scope for value in values for text in value.split() if (scope := parse(text)) is not None]


def merged(grants: Sequence[Grant]) -> list[Scope]:
    """Grants gathered into one scope per resource, in the order first named (the challenge's `scope`)."""
    by_resource: dict[tuple[str, str], list[str]] = {}
    for kind, name, action in grants:
        actions = by_resource.setdefault((kind, name), [])
        if action not in actions:
            actions.append(action)
    return [Scope(kind, name, tuple(actions)) for (kind, name), actions in by_resource.items()]


def claims(access: object) -> frozenset[Grant]:
    """The grants of a token's `access` claim; raises ValueError when it is not a list of {type, name, actions}.
    A member that is null or missing is empty, as Distribution (Go) reads it: Go services write a scope they granted
    no action of as `"actions": null`, beside the scopes they did grant."""
    if access is None:
        return frozenset()
    if not isinstance(access, list):
        raise ValueError("the access claim is not a list")
    grants: set[Grant] = set()
    for entry in access:
        if not isinstance(entry, dict):
            raise ValueError("an access entry is not an object")
        kind, name, actions = (_or(entry.get("type"), ""), _or(entry.get("name"), ""), _or(entry.get("actions"), []))
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(actions, list):
            raise ValueError("an access entry's type, name or actions is of the wrong kind")
        grants.update((kind, name, action) for action in actions if isinstance(action, str))
    return frozenset(grants)


def _or(value: object, empty: object) -> object:
    return empty if value is None else value
