"""The window of a blob fetch: what it holds beyond its data file, and when the fetch must wait for its writer.
(That the first client gets these bytes before they are written is tested over HTTP in tests/test_proxy.py.)"""

from __future__ import annotations

from pathlib import Path

from docker_registry.server.proxy import window
from docker_registry.server.proxy.window import Window, must_wait

MIB = 1024 * 1024


def test_received_bytes_are_held_until_the_data_file_has_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    held = Window(str(data))
    held.add(b"a" * 10)
    held.add(b"")
    held.add(b"b" * 10)
    assert held.trim() == 20  # the writer has not created the file yet
    assert bytes(held.at(0) or b"") == b"a" * 10
    assert bytes(held.at(15) or b"") == b"b" * 5
    assert held.at(20) is None  # not received yet

    data.write_bytes(b"a" * 12)  # the first chunk is on file, the second not wholly
    assert held.trim() == 10
    assert held.at(5) is None  # the readers send it from the file
    assert bytes(held.at(12) or b"") == b"b" * 8

    data.write_bytes(b"a" * 10 + b"b" * 10)
    assert held.trim() == 0
    assert held.at(19) is None


def test_a_fetch_waits_past_its_window_or_its_workers_budget_but_never_while_holding_nothing(tmp_path: Path) -> None:
    one, other = Window(str(tmp_path / "one")), Window(str(tmp_path / "other"))
    for _ in range(window.WINDOW // MIB):
        one.add(b"x" * MIB)
    assert not must_wait(one, [one, other])
    one.add(b"x")
    assert must_wait(one, [one, other])  # one byte more than its window

    (tmp_path / "one").write_bytes(b"x" * MIB)
    assert not must_wait(one, [one, other])  # the writer caught up by a chunk

    other.held = window.BUDGET  # the worker's other fetches hold its whole budget
    assert must_wait(one, [one, other])
    empty = Window(str(tmp_path / "empty"))
    assert not must_wait(empty, [one, other, empty])  # holding nothing, it moves at its writer's pace
