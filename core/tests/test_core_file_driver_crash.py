"""A process killed in the middle of a write leaves the previous object (or none), and no visible debris: its
temporary file is in the driver's directory of them, which garbage collection purges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from docker_registry.core import exceptions
from docker_registry.drivers.file import TEMP_DIRECTORY, Driver

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from docker_registry.drivers.file import Driver

    async def main():
        driver = Driver({"rootdirectory": sys.argv[1]})
        block = b"\\xab" * (1 << 20)

        async def endless():
            while True:
                yield block
                print("MiB", flush=True)

        await driver.stream_write(sys.argv[2], endless())

    asyncio.run(main())
    """
)


def _kill_mid_write(root: Path, path: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), path], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for _ in range(40):  # 40 MiB: many buffered writes have reached the temporary file
            assert proc.stdout.readline() == "MiB\n", "the writer process died on its own"
        temporary = os.listdir(root / TEMP_DIRECTORY)
        assert temporary, "no temporary file on disk: the kill would not be mid-write"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(120)
async def test_killed_first_write_leaves_no_object(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kill_mid_write(root, "blobs/big/data")
    driver = Driver({"rootdirectory": str(root)})
    assert await driver.exists("blobs/big/data") is False
    assert await driver.exists("blobs") is False
    with pytest.raises(exceptions.FileNotFoundError):
        await driver.get_content("blobs/big/data")
    with pytest.raises(exceptions.FileNotFoundError):
        await driver.list_directory("")
    assert [p async for p in driver.walk()] == []


@pytest.mark.timeout(120)
async def test_killed_rewrite_keeps_previous_version(tmp_path: Path) -> None:
    root = tmp_path / "root"
    driver = Driver({"rootdirectory": str(root)})
    await driver.put_content("blobs/big/data", b"previous complete version")
    _kill_mid_write(root, "blobs/big/data")
    assert await driver.get_content("blobs/big/data") == b"previous complete version"
    assert await driver.list_directory("blobs/big") == ["blobs/big/data"]
    assert [p async for p in driver.walk()] == ["blobs/big/data"]


async def test_debris_of_a_killed_write_is_purged_once_old_enough(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kill_mid_write(root, "blobs/sha256/ab/abcd/data")
    debris = list((root / TEMP_DIRECTORY).iterdir())
    assert debris, "the killed write left its temporary file"
    driver = Driver({"rootdirectory": str(root)})
    size = sum(p.stat().st_size for p in debris)

    assert await driver.purge_temporary(older_than=0) == (0, 0)  # younger than asked: a write may be running
    assert await driver.purge_temporary(older_than=time.time() + 1, dry_run=True) == (len(debris), size)
    assert all(p.exists() for p in debris)
    assert await driver.purge_temporary(older_than=time.time() + 1) == (len(debris), size)

    assert not any((root / TEMP_DIRECTORY).iterdir())
    assert not (root / "blobs").exists()  # a first write made no directory for its object
