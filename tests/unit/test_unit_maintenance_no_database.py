"""`fsck` and `garbage-collect` pointed at a place that holds no registry (a typo in the root, Distribution's own
configuration): they found nothing wrong, exited 0, and left a new database, its lock and an 8 MiB reserve there.
They must refuse, exit 2 and create nothing; `import`, which fills a new database, still creates one."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from docker_registry.server.cli import EXIT_CONFIG_ERROR, main
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine

COMMANDS = [["fsck"], ["fsck", "--repair"], ["garbage-collect"], ["garbage-collect", "--dry-run"]]


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'typo'}\n{extra}")
    return config


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_root_without_a_registry_database_is_refused_and_left_alone(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "typo"
    root.mkdir()  # a folder that exists (Distribution's root, say), holding no registry

    status = main([command[0], str(_config(tmp_path)), *command[1:]])

    assert status == EXIT_CONFIG_ERROR
    error = capsys.readouterr().err
    assert f"no registry database at {root / 'registry.db'}" in error
    assert len(error.strip().splitlines()) == 1
    assert list(root.iterdir()) == []


def test_an_explicit_sqlite_file_that_is_missing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "elsewhere.db"
    config = _config(tmp_path, f"database:\n  url: sqlite:///{database}\n")

    assert main(["fsck", str(config)]) == EXIT_CONFIG_ERROR
    assert f"no registry database at {database}" in capsys.readouterr().err
    assert not database.exists()


@pytest.mark.parametrize(
    "command",
    [["fsck"], ["garbage-collect"], ["import", "--from", "distribution"], ["import", "--v1"]],
    ids=" ".join,
)
def test_a_database_a_newer_release_migrated_is_refused_in_one_line(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A database at a revision this release does not ship (a newer release ran, then this one): `garbage-collect`
    and `import --v1` printed some forty lines of Alembic's traceback, the others "Can't locate revision" alone
    (upgrade probe). Each says in one line what happened and what to do."""
    root = tmp_path / "typo"
    root.mkdir()
    config = _config(tmp_path)
    engine = create_engine(f"sqlite:///{root / 'registry.db'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    tree = tmp_path / "tree"
    (tree / "docker" / "registry" / "v2" / "blobs").mkdir(parents=True)  # a (empty) Distribution tree
    arguments = [command[0], str(config), *command[1:]] + ([str(tree)] if command[0] == "import" else [])

    status = main(arguments)

    assert status == 1
    error = capsys.readouterr().err
    assert "schema revision 9999, which this release does not know: a newer release migrated it" in error
    assert len(error.strip().splitlines()) == 1
