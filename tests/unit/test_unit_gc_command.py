"""`garbage-collect` runs on connections of its own, tuned for rewriting much of the database (see
`store.engine.MAINTENANCE_PRAGMAS`); the server's connections keep SQLite's defaults, and both keep every commit
durable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from docker_registry.server.config import load
from docker_registry.server.gc.command import open_store
from docker_registry.server.preparation import prepare
from docker_registry.server.store.engine import create_engine

FULL = 2
MEMORY = 2


def _settings(engine: sa.Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "wal_autocheckpoint", "temp_store")
        }


def test_the_command_checkpoints_less_often_and_keeps_commits_durable(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yml"
    config_file.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n")
    (tmp_path / "data").mkdir()
    store = open_store(load(str(config_file)))
    try:
        assert _settings(store.engine) == {
            "journal_mode": "wal",
            "synchronous": FULL,
            "wal_autocheckpoint": 10000,
            "temp_store": MEMORY,
        }
    finally:
        store.close()


def test_the_servers_connections_keep_sqlites_checkpoints(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        settings = _settings(engine)
    finally:
        engine.dispose()
    assert settings["wal_autocheckpoint"] == 1000
    assert settings["synchronous"] == FULL


@pytest.mark.parametrize("entry", ["python -m", "console script"])
def test_the_summary_and_log_reach_a_pipe_whole_though_the_process_skips_its_teardown(
    tmp_path: Path, entry: str
) -> None:
    """A collection's process ends with `os._exit` (`cli.run`): what it printed must be flushed first, also when
    Python buffers its output (this machine's PYTHONUNBUFFERED is taken away)."""
    config_file = tmp_path / "config.yml"
    config_file.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n")
    prepare(load(str(config_file)))  # a registry's database: the command refuses a place that holds none
    program = (
        [sys.executable, "-m", "docker_registry.server"]
        if entry == "python -m"
        else [str(Path(sys.executable).parent / "docker-registry")]
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}

    result = subprocess.run(
        [*program, "garbage-collect", str(config_file), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"]["blobs"] == 0
    assert "empty repositories: done (0)" in result.stderr  # the last log line
