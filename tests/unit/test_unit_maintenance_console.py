"""What the maintenance commands print: a progress bar only on a terminal, plain lines otherwise (a cron job's log
must not fill with carriage returns), problems and the summary on stdout either way."""

from __future__ import annotations

import io

from docker_registry.server.maintenance.console import Console, human_bytes


def test_without_a_terminal_progress_is_plain_lines_and_problems_go_to_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console("docker-registry fsck", out=out, progress=err, interactive=False, log_every=0)
    with console.phase("blobs", 2) as phase:
        phase.add_bytes(3 * 1024 * 1024)
        phase.advance()
        console.problem("blob sha256:ab is corrupt")
        phase.advance()
    console.summary({"blobs scanned": 2}, 3 * 1024 * 1024)
    assert "\r" not in err.getvalue()
    assert err.getvalue().splitlines() == [
        "docker-registry fsck: blobs: 1/2, 3.0 MiB read",
        "docker-registry fsck: blobs: 2/2, 3.0 MiB read",
        "docker-registry fsck: blobs: 2/2, 3.0 MiB read, done",
    ]
    lines = out.getvalue().splitlines()
    assert lines[0] == "problem: blob sha256:ab is corrupt"
    assert lines[1].startswith("docker-registry fsck summary: 2 blobs scanned, 1 problem, 3.0 MiB read, ")
    assert console.problems == 1


def test_on_a_terminal_a_bar_is_drawn_and_lines_still_reach_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console("docker-registry import", out=out, progress=err, interactive=True)
    with console.phase("blobs", 4) as phase:
        phase.advance(4)
        console.problem("a link to a missing blob")
    assert "\r" in err.getvalue()  # the bar, redrawn in place
    assert "4/4" in err.getvalue()
    assert out.getvalue().splitlines() == ["problem: a link to a missing blob"]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 5 * 1024**3)] == ["0 B", "1023 B", "1.0 KiB", "5.0 GiB"]
