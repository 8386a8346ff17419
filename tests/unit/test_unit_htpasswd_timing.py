"""An unknown user's login takes as long as most known users' (`auth.htpasswd`): the dummy hash it is checked
against has the file's most common bcrypt cost. Before, it was cost 10 whatever the file held, so with entries of
Apache's default cost 5 an unknown user took ~20x longer: timing told which users exist."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import bcrypt

from docker_registry.server.auth.htpasswd import DEFAULT_COST, Htpasswd, common_cost


def _entry(user: str, cost: int) -> bytes:
    return user.encode() + b":" + bcrypt.hashpw(b"secret", bcrypt.gensalt(cost)) + b"\n"


def test_the_most_common_cost_wins_and_ties_go_to_the_higher() -> None:
    users = {"a": b"$2y$05$x", "b": b"$2b$05$y", "c": b"$2b$12$z", "d": b"$2b$xx$bad"}
    assert common_cost(users) == 5
    assert common_cost({"a": b"$2y$05$x", "c": b"$2b$12$z"}) == 12
    assert common_cost({}) == DEFAULT_COST


def _median_seconds(htpasswd: Htpasswd, user: str) -> float:
    async def timed() -> float:
        started = time.perf_counter()
        assert not await htpasswd.verify(user, "wrong")
        return time.perf_counter() - started

    return statistics.median(asyncio.run(timed()) for _ in range(7))


def test_an_unknown_user_is_checked_at_the_cost_of_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_bytes(_entry("alice", 4) + _entry("bob", 4) + _entry("dave", 11))
    htpasswd = Htpasswd(str(path))
    known, unknown, slow = (_median_seconds(htpasswd, user) for user in ("alice", "nosuchuser", "dave"))
    # cost 4 is ~1 ms, cost 11 ~150 ms on this machine: an unknown user now takes alice's time, not dave's
    assert unknown < slow / 8, (known, unknown, slow)
    assert unknown < known * 4 + 0.005, (known, unknown, slow)
