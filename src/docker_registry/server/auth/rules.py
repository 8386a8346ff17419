"""Access rules: who may pull, push or delete which repositories.

A rule is `{who, repositories, actions}`: `who` is a user of the htpasswd file, `group:<name>` (members listed in
`auth.htpasswd.groups`), `anonymous` (anyone, with or without credentials: logging in never loses a right) or
`authenticated` (any valid user);
`repositories` are globs (`*` matches any characters, `/` included; `?` one character), `actions` are `pull`,
`push`, `delete` or `*`. Rules only grant: what no rule grants is refused. With no rules at all, every
authenticated user may do everything and anonymous requests nothing (as Distribution's htpasswd does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..config.schema import AccessRule

PULL, PUSH, DELETE = "pull", "push", "delete"
ANONYMOUS, AUTHENTICATED = "anonymous", "authenticated"


@dataclass(frozen=True)
class Rule:
    who: str
    repositories: tuple[str, ...]
    actions: frozenset[str]

    def applies_to(self, user: str | None, groups: Mapping[str, frozenset[str]]) -> bool:
        if self.who == ANONYMOUS:
            return True
        if user is None:
            return False
        if self.who == AUTHENTICATED:
            return True
        if self.who.startswith("group:"):
            return user in groups.get(self.who.removeprefix("group:"), frozenset())
        return self.who == user

    def grants(self, repository: str, action: str) -> bool:
        return action in self.actions and any(fnmatchcase(repository, glob) for glob in self.repositories)


class Rules:
    def __init__(self, rules: Sequence[Rule], groups: Mapping[str, Sequence[str]]) -> None:
        self._rules = tuple(rules)
        self._groups = {name: frozenset(members) for name, members in groups.items()}
        if not self._rules:
            self._rules = (Rule(AUTHENTICATED, ("*",), frozenset({PULL, PUSH, DELETE})),)

    @classmethod
    def from_config(cls, access: Sequence[AccessRule], groups: Mapping[str, Sequence[str]]) -> Rules:
        every = frozenset({PULL, PUSH, DELETE})
        rules = [
            Rule(rule.who, tuple(rule.repositories), every if "*" in rule.actions else frozenset(rule.actions))
            for rule in access
        ]
        return cls(rules, groups)

    def allows(self, user: str | None, repository: str, action: str) -> bool:
        return any(r.applies_to(user, self._groups) and r.grants(repository, action) for r in self._rules)

    def allows_somewhere(self, user: str | None, action: str) -> bool:
        """Whether some rule grants `user` the action on some repository: what v1 image routes, which name no
        repository (images belong to none), require."""
        return any(r.applies_to(user, self._groups) and action in r.actions for r in self._rules)

    def anonymous_may_pull_something(self) -> bool:
        return any(r.who == ANONYMOUS and PULL in r.actions for r in self._rules)
