"""The maintenance benchmark end to end on a tiny tree: every command runs and reports what it did."""

from __future__ import annotations

import maintenance
import pytest


def test_tiny_run_times_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert maintenance.main(["--repositories", "2", "--tags", "2", "--layers", "1", "--layer-size", "1024"]) == 0
    out = capsys.readouterr().out
    assert "tree: 2 repositories, 4 manifests, 8 blobs" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "seconds" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| import, copied",
        "| import again (nothing to do)",
        "| import, in place",
        "| fsck of the copied store",
    ]
    assert "import, copied: docker-registry import summary: 2 repositories, 8 blobs scanned" in out
    assert "0 blobs verified, 0 blobs copied, 0 links imported, 0 manifests imported" in out  # the second run
    assert out.count(", 0 problems, ") == 4
