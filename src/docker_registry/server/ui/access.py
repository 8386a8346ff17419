"""Who is looking at the UI and what they may see and do: the registry's own users and access rules, handed in by
the composition root (this feature may not import the auth feature), so the UI never grants more than the API.

Three cases: no `auth` section (everything is shown, deletes follow `storage.delete.enabled` alone); users the
registry knows (htpasswd mode, or token mode whose built-in service checks an htpasswd file): a login and the same
rules; token mode with an outside token server only: the registry knows neither users nor rules, so the UI
refuses to show anything rather than guess.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PULL, DELETE = "pull", "delete"


class LoginsBlocked(Exception):
    """The address made too many failed logins (the API's limit): it may try again in `seconds`. Raised by
    `Accounts.check`, whose maker translates the auth feature's own refusal into this one."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"blocked for {seconds:.0f} s")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Accounts:
    """What the auth feature lends the UI: password checks, rules, and the failed-login limiter it shares with
    the API (so the form is no way around it)."""

    check: Callable[[str, str, str], Awaitable[bool]]
    """(address, user, password): whether the password is the user's, under the API's limit; raises
    `LoginsBlocked` while the address may not try."""
    entry: Callable[[str], bytes | None]
    """The user's password entry as the file holds it now (None: no such user): sessions are signed with it, so a
    changed password or a removed user ends them."""
    allows: Callable[[str | None, str, str], bool]
    allows_somewhere: Callable[[str | None, str], bool]
    """(user, action): whether some rule grants it on some repository, from the rules alone."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person behind one request: a user (None: anonymous) under the registry's rules, or anyone on a registry
    without auth (`accounts` None)."""

    user: str | None
    accounts: Accounts | None

    def may(self, repository: str, action: str) -> bool:
        return self.accounts is None or self.accounts.allows(self.user, repository, action)

    def may_somewhere(self, action: str) -> bool:
        return self.accounts is None or self.accounts.allows_somewhere(self.user, action)

    @property
    def needs_login(self) -> bool:
        """Whether a login could show more: users exist and this viewer is anonymous."""
        return self.accounts is not None and self.user is None
