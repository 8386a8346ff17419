"""What only the filesystem driver promises: real files, hidden temporary files, no ghosts, slices per thread hop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from docker_registry.core import exceptions
from docker_registry.drivers import file as file_driver
from docker_registry.drivers.file import TEMP_DIRECTORY, Driver

MiB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def driver(root: Path) -> Driver:
    return Driver({"rootdirectory": str(root)})


def test_default_root_is_data_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Driver().root == str(tmp_path / "data")


async def test_objects_are_plain_files_under_the_root(driver: Driver, root: Path) -> None:
    await driver.put_content("blobs/sha256/ab/abcd/data", b"\xffcontent")
    on_disk = root / "blobs" / "sha256" / "ab" / "abcd" / "data"
    assert on_disk.read_bytes() == b"\xffcontent"
    assert driver.local_path("blobs/sha256/ab/abcd/data") == str(on_disk)


async def test_temporary_files_never_show(driver: Driver, root: Path) -> None:
    await driver.put_content("dir/object", b"x")
    (root / "dir" / ".tmp-leftover").write_bytes(b"partial")
    (root / "ghost").mkdir()
    (root / "ghost" / ".tmp-leftover").write_bytes(b"partial")
    assert await driver.list_directory("") == ["dir"]
    assert await driver.list_directory("dir") == ["dir/object"]
    assert [p async for p in driver.walk()] == ["dir/object"]
    assert await driver.exists("ghost") is False
    with pytest.raises(exceptions.FileNotFoundError):
        await driver.list_directory("ghost")
    with pytest.raises(exceptions.FileNotFoundError):
        await driver.remove("ghost")


@pytest.mark.parametrize("path", [".tmp-x", "dir/.tmp-1234", ".tmp-a/b"])
async def test_temporary_names_are_reserved(driver: Driver, path: str) -> None:
    with pytest.raises(exceptions.WrongArgumentsError, match="reserved"):
        await driver.put_content(path, b"x")
    with pytest.raises(exceptions.WrongArgumentsError):
        await driver.exists(path)


def _objects_at(root: Path) -> list[str]:
    """The root's entries but the directory of temporary files, which stays once made."""
    return sorted(set(os.listdir(root)) - {TEMP_DIRECTORY})


async def test_emptied_directories_are_removed_up_to_the_root(driver: Driver, root: Path) -> None:
    await driver.put_content("a/b/c/d", b"x")
    await driver.put_content("a/keep", b"x")
    await driver.remove("a/b/c/d")
    assert sorted(os.listdir(root / "a")) == ["keep"]
    await driver.move("a/keep", "z/y/moved")
    assert _objects_at(root) == ["z"]
    w = await driver.writer("uploads/u/data")
    await w.cancel()
    assert _objects_at(root) == ["z"]
    await driver.remove("z")
    assert _objects_at(root) == []


async def test_object_and_directory_conflicts_are_clear_errors(driver: Driver) -> None:
    await driver.put_content("a", b"object")
    await driver.put_content("d/child", b"x")
    with pytest.raises(exceptions.WrongArgumentsError, match="parent is an object"):
        await driver.put_content("a/b", b"x")
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.put_content("d", b"x")
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.stream_write("d", _chunks(b"x"))
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.move("a", "d")
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.writer("d")
    assert await driver.get_content("a") == b"object"
    assert sorted([p async for p in driver.walk()]) == ["a", "d/child"]


async def _chunks(data: bytes, size: int = 1000) -> Any:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Counts the driver's trips to a worker thread."""
    calls: list[object] = []
    real = asyncio.to_thread

    async def counting(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)  # the module the driver calls it through
    return calls


async def test_stream_read_carries_one_mib_per_thread_hop(driver: Driver, thread_hops: list[object]) -> None:
    await driver.put_content("big", os.urandom(5 * MiB))
    thread_hops.clear()
    sizes = [len(c) async for c in driver.stream_read("big")]
    assert sizes == [MiB] * 5
    assert len(thread_hops) <= 7  # open, five slices, the empty read at the end


async def test_small_writes_are_buffered(driver: Driver, thread_hops: list[object]) -> None:
    data = os.urandom(2 * MiB)
    w = await driver.writer("uploads/u/data")
    thread_hops.clear()
    for start in range(0, len(data), 1000):
        await w.write(data[start : start + 1000])
    await w.commit()
    assert len(thread_hops) <= 5
    thread_hops.clear()
    assert await driver.stream_write("streamed", _chunks(data)) == len(data)
    assert len(thread_hops) <= 6
    assert await driver.get_content("uploads/u/data") == data == await driver.get_content("streamed")


async def test_writer_resumes_in_another_driver_instance(driver: Driver, root: Path) -> None:
    w = await driver.writer("uploads/u/data")
    await w.write(b"first ")
    await w.close()
    other = Driver({"rootdirectory": str(root)})
    w2 = await other.writer("uploads/u/data", append=True)
    assert w2.size == 6
    await w2.write(b"second")
    await w2.commit()
    assert await driver.get_content("uploads/u/data") == b"first second"


async def test_a_writer_that_wakes_after_its_file_was_moved_writes_nothing(driver: Driver) -> None:
    """A writer paused past its claim's lease (SIGSTOP) while another took the session over and published it: a
    rename keeps the inode, so the paused writer's buffered bytes went into the published, verified blob. Its
    writes now fail as for a session that is gone, and the moved file stays as it was."""
    taken_over = Driver({"rootdirectory": driver.root})
    for n, wakes in enumerate(("writing more", "closing")):
        w = await driver.writer(f"uploads/{n}/data")
        await w.write(b"x" * 1000)  # buffered: still in this writer's memory
        await taken_over.move(f"uploads/{n}/data", f"blobs/{n}/data")
        wake = w.write(b"y" * 2 * MiB) if wakes == "writing more" else w.close()  # the first: written out
        with pytest.raises(exceptions.FileNotFoundError):
            await wake
        assert await driver.get_content(f"blobs/{n}/data") == b"", wakes  # nothing of it reached the moved file


async def test_a_write_cut_short_by_a_full_disk_leaves_the_size_the_file_holds(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk takes part of a chunk: the writer's size said every byte given, so the session recorded more
    than its file held and the client's resume at that offset was refused (or less, the other way round)."""
    real = file_driver._write_and_start_writeback

    def disk_fills(f: Any, data: bytes, *args: Any) -> None:
        f.write(data[: len(data) // 3])
        f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    w = await driver.writer("uploads/u/data")
    await w.write(b"x" * 1000)
    monkeypatch.setattr(file_driver, "_write_and_start_writeback", disk_fills)
    with pytest.raises(OSError, match="No space"):
        await w.write(b"y" * 3 * MiB)
    monkeypatch.setattr(file_driver, "_write_and_start_writeback", real)
    await w.close()
    held = len(await driver.get_content("uploads/u/data"))
    assert w.size == held == (1000 + 3 * MiB) // 3  # a third of what was pending: what the disk took


async def test_cancelled_stream_write_leaves_nothing(driver: Driver, root: Path) -> None:
    started = asyncio.Event()

    async def endless() -> Any:
        while True:
            yield b"x" * 100_000
            started.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(driver.stream_write("dir/object", endless()))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _objects_at(root) == []
    assert os.listdir(root / TEMP_DIRECTORY) == []  # its temporary file went too


async def _closed_session(driver: Driver, path: str, data: bytes) -> None:
    w = await driver.writer(path)
    await w.write(data)
    await w.close()


async def test_read_unfinished_reads_a_closed_session_in_one_hop(driver: Driver, thread_hops: list[object]) -> None:
    data = os.urandom(20_000)
    await _closed_session(driver, "uploads/u/data", data)
    thread_hops.clear()
    assert await driver.read_unfinished("uploads/u/data", MiB) == data
    assert len(thread_hops) == 1


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the driver fsyncs, in order: a file's or directory's path (resolved through /proc/self/fd)."""
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return synced


async def test_publishing_an_unsynced_upload_names_it_then_syncs_file_and_directories(
    driver: Driver, root: Path, fsynced: list[str]
) -> None:
    """One journal commit: the new name exists before the file's fsync (which commits it along), and every
    directory that gained an entry is fsynced (at the same time as the file) before the call returns; the
    session's name is gone after."""
    data = os.urandom(20_000)
    await _closed_session(driver, "uploads/u/data", data)
    await driver.put_content("blobs/sha256/other", b"x")  # blobs/sha256/ exists, ab/ and abcd/ are new
    fsynced.clear()
    assert await driver.move_if_absent("uploads/u/data", "blobs/sha256/ab/abcd/data", sync_source=True) is True
    final = root / "blobs" / "sha256" / "ab" / "abcd"
    assert (final / "data").read_bytes() == data
    assert not (root / "uploads").exists()
    assert str(final / "data") in fsynced, "the file is fsynced under its new name"
    assert set(fsynced) >= {str(final), str(final.parent), str(final.parent.parent)}


async def test_publishing_without_hard_links_falls_back_to_sync_and_rename(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(20_000)
    await _closed_session(driver, "uploads/u/data", data)

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # what FAT and some FUSE filesystems answer

    monkeypatch.setattr(os, "link", no_links)
    assert await driver.move_if_absent("uploads/u/data", "blobs/sha256/ab/abcd/data", sync_source=True) is True
    assert (root / "blobs" / "sha256" / "ab" / "abcd" / "data").read_bytes() == data
    assert not (root / "uploads").exists()


async def test_publishing_keeps_an_object_that_arrived_after_the_check(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another upload of the same blob may put it at the path between the check and the link: it stays, and the
    session keeps its bytes (False, as when the object was there before)."""
    data = os.urandom(20_000)
    await _closed_session(driver, "uploads/u/data", data)
    real_link = os.link

    def racing_link(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"the other upload's copy")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    assert await driver.move_if_absent("uploads/u/data", "blobs/sha256/ab/abcd/data", sync_source=True) is False
    assert (root / "blobs" / "sha256" / "ab" / "abcd" / "data").read_bytes() == b"the other upload's copy"
    assert await driver.get_content("uploads/u/data") == data


async def test_a_publication_cut_short_between_link_and_unlink_is_finished_by_the_next_move(
    driver: Driver, root: Path
) -> None:
    """A crash may leave the session's file with both names (the blob's and the session's): the retried PUT moves
    the session's name onto the blob's, which a rename of two names of one file does not do by itself."""
    data = os.urandom(20_000)
    await _closed_session(driver, "uploads/u/data", data)
    final = root / "blobs" / "sha256" / "ab" / "abcd" / "data"
    final.parent.mkdir(parents=True)
    os.link(root / "uploads" / "u" / "data", final)
    await driver.move("uploads/u/data", "blobs/sha256/ab/abcd/data")
    assert final.read_bytes() == data
    assert not (root / "uploads").exists()


async def test_read_unfinished_leaves_a_large_session_unread(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    await _closed_session(driver, "uploads/u/data", os.urandom(3 * MiB))
    reads: list[int] = []
    real_open = open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        f = real_open(*args, **kwargs)
        read = f.read

        def counted(n: int = -1) -> bytes:
            reads.append(n)
            return read(n)

        f.read = counted
        return f

    monkeypatch.setattr("builtins.open", counting_open)
    assert await driver.read_unfinished("uploads/u/data", MiB) is None
    assert reads == []


async def test_a_small_chunk_is_appended_in_one_thread_hop(driver: Driver, thread_hops: list[object]) -> None:
    assert await driver.append_bytes("uploads/u/data", b"a" * 20_000, 0) == 0
    assert await driver.append_bytes("uploads/u/data", b"b" * 20_000, 20_000, durable=True) == 20_000
    assert len(thread_hops) == 2
    assert await driver.get_content("uploads/u/data") == b"a" * 20_000 + b"b" * 20_000


async def test_remove_many_prunes_every_emptied_directory_but_never_the_root(driver: Driver, root: Path) -> None:
    """Directories are pruned once per run, after all their files (a blob's `<xx>/` after every blob in it): each
    one emptied goes, up to the root, which stays even when the run empties it."""
    paths = ["top", "blobs/sha256/ab/ab01/data", "blobs/sha256/ab/ab02/data", "blobs/sha256/cd/cd01/data"]
    for path in paths:
        await driver.put_content(path, b"x")
    await driver.put_content("blobs/sha256/cd/cd02/data", b"kept")
    await driver.remove_many(paths[:3])
    assert _entries(root) == [
        "blobs",
        "blobs/sha256",
        "blobs/sha256/cd",
        "blobs/sha256/cd/cd01",
        "blobs/sha256/cd/cd01/data",
        "blobs/sha256/cd/cd02",
        "blobs/sha256/cd/cd02/data",
    ]
    await driver.remove_many(["blobs/sha256/cd/cd01/data", "blobs/sha256/cd/cd02/data"])
    assert _entries(root) == []
    assert _is_directory(root)  # the root stays


async def test_remove_many_leaves_the_root_when_it_empties_it(driver: Driver, root: Path) -> None:
    _plant(root / "only")  # alone in the root: no temporary directory beside it
    await driver.remove_many(["only"])
    assert _is_directory(root)
    assert await driver.exists("only") is False


async def test_remove_many_finishes_while_asyncios_threads_are_all_busy(driver: Driver, root: Path) -> None:
    """A collection inside the server deletes files in a process of its own, so it neither waits for the threads
    that serve requests nor holds them: here the only thread of asyncio's pool stays busy throughout."""
    paths = [f"blobs/sha256/{n:02x}/{n:02x}{n:02x}/data" for n in range(64)]
    for path in paths:
        _plant(root / path)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    released = threading.Event()
    busy = asyncio.ensure_future(asyncio.to_thread(released.wait, 10))
    try:
        await asyncio.wait_for(driver.remove_many(paths), 5)
    finally:
        released.set()
        await busy
    assert _entries(root) == []


async def test_remove_many_deletes_in_a_process_of_its_own(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in this process's threads, which would take its GIL back after every removal (beside a collection's
    SQL, each waited for the switch interval): here this process cannot remove a thing, and the files still go."""
    paths = [f"blobs/sha256/{n:02x}/{n:02x}{n:02x}/data" for n in range(40)]
    for path in paths:
        _plant(root / path)

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "not in this process")

    monkeypatch.setattr(os, "unlink", refused)
    monkeypatch.setattr(os, "rmdir", refused)
    await driver.remove_many(paths)
    monkeypatch.undo()
    assert _entries(root) == []


@pytest.fixture(params=["own process", "embedded"])
def interpreter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways `remove_many` deletes: in a process of its own, or in this one's threads where Python is embedded
    and no interpreter can be started (`sys.executable` empty)."""
    if request.param == "embedded":
        monkeypatch.setattr(sys, "executable", "")
    return str(request.param)


async def test_remove_many_prunes_and_skips_either_way(driver: Driver, root: Path, interpreter: str) -> None:
    for path in ("blobs/ab/ab01/data", "blobs/ab/ab02/data", "keep/1", "dir/inner/x"):
        _plant(root / path)
    await driver.remove_many(["blobs/ab/ab01/data", "blobs/ab/ab02/data", "missing/file", "dir"])
    assert _entries(root) == ["dir", "dir/inner", "dir/inner/x", "keep", "keep/1"]


async def test_a_failed_removal_is_raised_with_its_file(driver: Driver, root: Path, interpreter: str) -> None:
    """A removal that fails for another reason than a missing file (here a name longer than the filesystem
    takes) is the caller's error, naming the file; the others in the run are still removed."""
    _plant(root / "blobs/ab/ab01/data")
    _plant(root / "blobs/cd/kept")  # the path is walked up to the long name
    too_long = "blobs/cd/" + "c" * 300 + "/data"
    with pytest.raises(OSError, match="too long") as raised:
        await driver.remove_many(["blobs/ab/ab01/data", too_long])
    assert raised.value.errno == errno.ENAMETOOLONG
    assert raised.value.filename == str(root / too_long)
    assert _entries(root) == ["blobs", "blobs/cd", "blobs/cd/kept"]


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"], ids=["ends badly", "cannot start"])
async def test_without_a_working_removal_process_the_files_go_in_this_one(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """Removing twice is harmless, so a removal process that cannot start, or ends with neither success nor a
    report, leaves the work to threads of this process rather than failing the collection."""
    _plant(root / "a/1")
    _plant(root / "b/2")
    monkeypatch.setattr(sys, "executable", executable)
    await driver.remove_many(["a/1", "b/2"])
    assert _entries(root) == []


async def test_a_cancelled_removal_stops_its_process(driver: Driver, root: Path, tmp_path: Path) -> None:
    """A collection stopped (the server shutting down) leaves no removal process behind, deleting on its own."""
    pid_file = tmp_path / "pid"
    slow = tmp_path / "slow-python"
    slow.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    slow.chmod(0o755)
    _plant(root / "a/1")
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(sys, "executable", str(slow))
        removing = asyncio.ensure_future(driver.remove_many(["a/1"]))
        async with asyncio.timeout(5):
            while not pid_file.exists() or not pid_file.read_text().strip():
                await asyncio.sleep(0.01)
        removing.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):  # killed at once, not waited for until its sleep ends
                await removing
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_a_garbled_report_of_the_removal_process_is_still_an_os_error() -> None:
    from docker_registry.core import removal

    error = removal.reported_error(b"not a report")
    assert isinstance(error, OSError)
    assert "not a report" in str(error)
    reported = removal.reported_error(b"13\0/data/blobs/x\0Permission denied")
    assert isinstance(reported, PermissionError)
    assert reported.filename == "/data/blobs/x"


def _entries(root: Path) -> list[str]:
    """Everything below `root` but the temporary files' directory, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if TEMP_DIRECTORY not in p.parts)


def _is_directory(path: Path) -> bool:
    return path.is_dir()


def _plant(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")


async def test_put_if_absent_syncs_the_file_and_every_directory_that_gained_an_entry(
    driver: Driver, root: Path, fsynced: list[str]
) -> None:
    """Published like an upload (`_link_and_sync`): durable under its new name before the call returns, and no
    temporary file left behind."""
    await driver.put_content("blobs/sha256/other", b"x")  # blobs/sha256/ exists, ab/ and abcd/ are new
    fsynced.clear()
    assert await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob") is True
    final = root / "blobs" / "sha256" / "ab" / "abcd"
    assert (final / "data").read_bytes() == b"blob"
    assert set(fsynced) >= {str(final / "data"), str(final), str(final.parent), str(final.parent.parent)}
    assert os.listdir(root / TEMP_DIRECTORY) == []


async def test_put_if_absent_without_hard_links_writes_by_rename(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # what FAT and some FUSE filesystems answer

    monkeypatch.setattr(os, "link", no_links)
    assert await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob") is True
    assert (root / "blobs" / "sha256" / "ab" / "abcd" / "data").read_bytes() == b"blob"
    assert os.listdir(root / TEMP_DIRECTORY) == []


async def test_put_if_absent_onto_a_directory_is_a_clear_error(driver: Driver, root: Path) -> None:
    await driver.put_content("blobs/dir/object", b"x")
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.put_if_absent("blobs/dir", b"blob")
    assert os.listdir(root / TEMP_DIRECTORY) == []


async def test_put_if_absent_of_a_new_blob_looks_nothing_up_and_makes_its_directory_with_one_mkdir(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each system call gives up the GIL and takes it back: a new blob into a new `<hex>/` (its parent there
    already) stats nothing, makes its directory with one `mkdir` and unlinks only its temporary name."""
    await driver.put_content("blobs/sha256/ab/other", b"x")
    calls: list[str] = []
    for name in ("stat", "mkdir", "unlink"):
        real = getattr(os, name)

        def recording(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, recording)
    assert await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob") is True
    assert sorted(calls) == ["mkdir", "unlink"]
    assert (root / "blobs" / "sha256" / "ab" / "abcd" / "data").read_bytes() == b"blob"
    assert os.listdir(root / TEMP_DIRECTORY) == []


async def test_appending_onto_a_directory_is_a_clear_error(driver: Driver) -> None:
    """`append_bytes` opens a bare descriptor without looking first: the open's own refusal is the clear error."""
    await driver.put_content("d/child", b"x")
    for expected_size in (0, 1):  # a new session's first chunk, a later one
        with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
            await driver.append_bytes("d", b"x", expected_size)
    with pytest.raises(exceptions.WrongArgumentsError, match="directory"):
        await driver.writer("d", append=True)
    assert await driver.get_content("d/child") == b"x"


async def test_put_if_absent_under_an_object_is_a_clear_error(driver: Driver, root: Path) -> None:
    """The name's directory is an object (the single `mkdir` finds something there that is no directory), or a
    parent further up is one."""
    await driver.put_content("blobs/object", b"x")
    with pytest.raises(exceptions.WrongArgumentsError, match="a parent is an object"):
        await driver.put_if_absent("blobs/object/data", b"blob")
    with pytest.raises(exceptions.WrongArgumentsError, match="a parent is an object"):
        await driver.put_if_absent("blobs/object/deeper/data", b"blob")
    assert await driver.get_content("blobs/object") == b"x"
    assert os.listdir(root / TEMP_DIRECTORY) == []


async def test_publishing_a_temporary_file_never_removes_the_temporary_directory(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`put_if_absent` publishes its temporary file by `_link_and_sync`, which prunes the source's directory: the
    temporary files' one must stay, or a write that has just created it could find it gone before its `open`.
    Here another `put_if_absent` finishes exactly there, in that window."""
    await driver.put_if_absent("blobs/first", b"x")
    assert (root / TEMP_DIRECTORY).is_dir()
    with contextlib.suppress(FileNotFoundError):
        (root / TEMP_DIRECTORY).rmdir()  # as in a fresh root: the next write creates it
    real_makedirs = os.makedirs

    def makedirs_then_a_concurrent_publication(name: str, *args: Any, **kwargs: Any) -> None:
        real_makedirs(name, *args, **kwargs)
        if name == str(root / TEMP_DIRECTORY):
            monkeypatch.setattr(os, "makedirs", real_makedirs)
            assert driver._put_if_absent_sync(str(root / "a" / "other"), "a/other", b"other") is True

    monkeypatch.setattr(os, "makedirs", makedirs_then_a_concurrent_publication)
    await driver.put_content("b/object", b"b")
    assert await driver.get_content("b/object") == b"b"
    assert await driver.get_content("a/other") == b"other"
    assert os.listdir(root / TEMP_DIRECTORY) == []


@pytest.fixture
def fsync_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Which thread fsyncs what: (path, thread name)."""
    seen: list[tuple[str, str]] = []
    real = os.fsync

    def recording(fd: int) -> None:
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


async def test_a_new_name_fsyncs_its_directories_beside_the_file_and_a_lone_fsync_hands_nothing_off(
    driver: Driver, root: Path, fsync_threads: list[tuple[str, str]]
) -> None:
    await driver.put_content("blobs/sha256/other", b"x")
    fsync_threads.clear()
    assert await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob") is True
    final = root / "blobs" / "sha256" / "ab" / "abcd"
    threads = dict(fsync_threads)
    directories = {str(final), str(final.parent), str(final.parent.parent)}  # abcd/ and ab/ are new
    assert set(threads) == {str(final / "data"), *directories}
    assert not threads[str(final / "data")].startswith("fsync-"), "the file on the calling thread"
    assert all(threads[d].startswith("fsync-") for d in directories), "its directories beside it"
    fsync_threads.clear()
    await driver.put_content("blobs/sha256/other", b"y")  # rewritten in place: its file, then its directory alone
    assert len({thread for _, thread in fsync_threads}) == 1, "no hand-off for a single fsync"


async def test_a_failing_directory_fsync_fails_the_publication(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync

    def failing_for_directories(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_for_directories)
    with pytest.raises(OSError, match="Input/output error"):
        await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob")


def test_a_forked_child_fsyncs_with_threads_of_its_own(root: Path) -> None:
    """The parent's fsync threads do not exist in a forked child (a registry worker): it starts its own."""
    from docker_registry.drivers import file

    directory = root / "d"
    directory.mkdir(parents=True)
    (directory / "f").write_bytes(b"x")
    file._fsync_together([str(directory / "f")], [str(directory), str(root)])  # the parent's threads exist
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(10)  # a child waiting for threads that do not exist dies of SIGALRM instead of hanging
        file._fsync_together([str(directory / "f")], [str(directory), str(root)])
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forked_child_removes_as_its_parent_does(driver: Driver, root: Path) -> None:
    """A registry worker is a forked child: its `remove_many` starts and waits for its own removal process."""
    asyncio.run(driver.put_content("a/1", b"x"))
    asyncio.run(driver.put_content("b/2", b"x"))
    asyncio.run(driver.remove_many(["a/1"]))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(10)  # a child waiting for what never comes dies of SIGALRM instead of hanging
        asyncio.run(driver.remove_many(["b/2"]))
        os._exit(0 if not (root / "b").exists() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not (root / "a").exists()


async def test_a_publication_returns_only_once_every_fsync_has_returned(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable when it returns: the directories' fsyncs, run by other threads, are waited for, however slow."""
    finished: list[str] = []
    real = os.fsync

    def slow_for_directories(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            time.sleep(0.2)
        real(fd)
        finished.append(path)

    monkeypatch.setattr(os, "fsync", slow_for_directories)
    assert await driver.put_if_absent("blobs/sha256/ab/abcd/data", b"blob") is True
    final = root / "blobs" / "sha256" / "ab" / "abcd"
    assert set(finished) >= {str(final / "data"), str(final), str(final.parent)}


async def test_a_new_file_in_an_existing_directory_is_opened_without_making_it(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's first chunk (`append_bytes` at size 0, or a new writer) into `uploads/`, there already: one
    `open`, no `mkdir` that finds the directory nor a look at it; a missing directory is still made."""
    await driver.put_content("uploads/other", b"x")
    calls: list[str] = []
    for name in ("stat", "mkdir"):
        real = getattr(os, name)

        def recording(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, recording)
    assert await driver.append_bytes("uploads/one", b"abc", 0) == 0
    await (await driver.writer("uploads/two")).close()
    assert calls == []
    assert await driver.append_bytes("elsewhere/new/one", b"abc", 0) == 0
    assert (root / "elsewhere" / "new" / "one").read_bytes() == b"abc"
    with pytest.raises(exceptions.WrongArgumentsError, match="a parent is an object"):
        await driver.append_bytes("uploads/other/data", b"abc", 0)


async def test_a_shared_directory_pruned_after_the_mkdir_that_found_it_is_made_again(
    driver: Driver, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uploads/`, shared by every flat session, is pruned when the last one ends: a new object's `mkdir` can
    find its directory there and the look an instant later find nothing. That is a directory to make again, not
    an object in the way (which was a 500 for a skopeo push)."""
    (root / "uploads").mkdir(parents=True)
    real_mkdir = os.mkdir
    pruned: list[str] = []

    def found_then_pruned(path: Any, *args: Any, **kwargs: Any) -> None:
        try:
            real_mkdir(path, *args, **kwargs)
        except FileExistsError:
            if not pruned:
                os.rmdir(path)  # another session's prune, between this mkdir and the look after it
                pruned.append(str(path))
            raise

    monkeypatch.setattr(os, "mkdir", found_then_pruned)
    await driver.put_content("uploads/one", b"x")
    assert pruned == [str(root / "uploads")]
    assert (root / "uploads" / "one").read_bytes() == b"x"


async def test_the_blocking_appender_counts_the_same_chunk_again_as_appended(driver: Driver, root: Path) -> None:
    """`appender`: a chunk found already appended at its offset (a transaction run again) is appended; other bytes
    there are a mismatch, and nothing is written."""
    append = driver.appender("uploads/s")
    assert append is not None
    assert append(b"abc", 0) == 0
    assert append(b"def", 3) == 3
    assert append(b"def", 3) == 3  # again: found there
    assert append(b"xyz", 3) == 6  # not what is there
    assert append(b"de", 3) == 6  # a shorter piece of it is not the chunk
    assert (root / "uploads" / "s").read_bytes() == b"abcdef"
    missing = driver.appender("uploads/none")
    assert missing is not None
    with pytest.raises(exceptions.FileNotFoundError):  # a later chunk with nothing to append to
        missing(b"x", 9)
