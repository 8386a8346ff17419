"""One password check under the failed-login limit, as the registry, the token service and the web UI all make it:
so that none of them is a way around the limit the others keep."""

from __future__ import annotations

from .htpasswd import Htpasswd
from .limiter import FailureLimiter


class Blocked(Exception):
    """The address made too many failed logins: it may try again in `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"blocked for {seconds:.0f} s")
        self.seconds = seconds


class Logins:
    def __init__(self, htpasswd: Htpasswd | None, limiter: FailureLimiter) -> None:
        self.htpasswd, self.limiter = htpasswd, limiter
        """Without users (a token service of anonymous tokens only) every login fails, and counts."""

    async def check(self, address: str, user: str, password: str) -> bool:
        """Whether the password is the user's; raises `Blocked` while the address may not try. A user and password
        verified within the last minute pass without waiting for a turn behind checks under way (a client behind a
        proxy that shares its address with a guesser keeps working), but not while the address is blocked: the
        cache is no one's in particular, so a blocked guesser would otherwise learn a remembered password's
        rightness from a 200 among 429s, at no cost."""
        if self.htpasswd is not None and self.htpasswd.remembers(user, password):
            if (left := self.limiter.blocked_for(address)) > 0:
                raise Blocked(left)
            return True
        left = await self.limiter.admit(address)
        if left > 0:
            raise Blocked(left)
        verified = False
        try:
            verified = bool(user) and self.htpasswd is not None and await self.htpasswd.verify(user, password)
        finally:  # a check cut short counts as failed: its turn is given back either way
            self.limiter.settle(address, failed=not verified)
        return verified
