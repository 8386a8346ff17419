"""fsck --repair racing a push: a blob found missing during the scan but pushed again before the repair is whole
by then, and must stay served; one still missing is forgotten. Real file driver and SQLite store, no mocks: the
race is set up by calling the repair step with what the scan saw."""

from __future__ import annotations

import io
from pathlib import Path

from docker_registry.core.digest import Hasher, blob_path
from docker_registry.drivers.file import Driver
from docker_registry.server.maintenance.console import Console
from docker_registry.server.maintenance.fsck import FsckResult, _repair
from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.inventory import InventoryQueries
from docker_registry.server.store.metadata import MetadataStore


def _digest(data: bytes) -> Hasher:
    hasher = Hasher()
    hasher.update(data)
    return hasher


async def test_a_blob_pushed_again_after_the_scan_is_left_alone(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store, inventory = MetadataStore(engine), InventoryQueries(engine)
    driver = Driver({"rootdirectory": str(tmp_path / "data")})
    back, gone = _digest(b"pushed again"), _digest(b"still gone")
    for hasher in (back, gone):
        store.link_blob("team/app", hasher.digest(), hasher.size)
    await driver.put_content(blob_path(back.digest()), b"pushed again")  # published by a push after the scan

    out = io.StringIO()
    console = Console("fsck", out=out, progress=io.StringIO(), interactive=False)
    await _repair(driver, inventory, console, FsckResult(missing={back.digest(), gone.digest()}))

    assert store.blob_size("team/app", back.digest()) == back.size
    assert store.blob_size("team/app", gone.digest()) is None
    assert f"blob {back.digest()} was pushed again meanwhile and is whole: left alone" in out.getvalue()
    store.close()


def test_fsck_checks_the_blobs_the_registry_serves_only(tmp_path: Path) -> None:
    """The row an upload holds while it publishes (pinned, linked nowhere yet) is no blob anyone can pull: a node
    killed at that moment left one that fsck reported missing from storage, although the client's retry then
    stored it. A linked blob and an unlinked one that is not being published are checked."""
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store, inventory = MetadataStore(engine), InventoryQueries(engine)
    linked, publishing, orphan = _digest(b"linked"), _digest(b"being published"), _digest(b"orphan")
    store.link_blob("team/app", linked.digest(), linked.size)
    assert store.pin_blob(publishing.digest(), publishing.size, "token")
    store.link_blob("team/app", orphan.digest(), orphan.size)
    store.unlink_blob("team/app", orphan.digest())
    listed = {str(blob.digest) for blob in inventory.blob_page(None, 100)}
    assert listed == {str(linked.digest()), str(orphan.digest())}
    store.close()
