"""`gc_phases.py`: a collection's timeline, from the command's own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from docker_registry.server.config import load
from docker_registry.server.preparation import prepare

PHASES = Path(__file__).parent / "gc_phases.py"


def test_timeline_of_a_collection(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    storage = {"filesystem": {"rootdirectory": str(tmp_path / "data")}, "delete": {"enabled": True}}
    config.write_text(yaml.safe_dump({"version": 0.1, "storage": storage, "gc": {"delay": "0s"}}))
    prepare(load(str(config)))  # a registry's database: the command refuses a place that holds none
    out = tmp_path / "events.json"
    done = subprocess.run(
        [sys.executable, str(PHASES), str(config), "--json", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"]["blobs"] == 0  # the command's own summary, untouched
    report = json.loads(out.read_text())
    events = report["events"]
    names = [name for name, *_ in events]
    assert names[0] == "imports"
    assert names[-1] == "exit"
    # gc.delay 0s: the single pass (no candidate marks)
    assert {"unreferenced_links", "begin_unlinked_blob_deletion", "collection (Collector.run)"} <= set(names)
    assert all(0 <= began <= ended for _, began, ended, _ in events)
    assert "unreferenced_links" in done.stderr
    assert "CPU" in done.stderr
    threads = report["threads"]
    assert set(threads) == {"main", "file removals", "store and the rest"}
    assert threads["main"] > 0  # start-up alone takes a tenth of a second
    # the threads' own clock ticks, within the process's total (a field misread would be far off)
    assert threads["main"] + threads["file removals"] <= report["cpu"] + 0.02
