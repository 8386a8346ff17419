"""`DriverTestSuite`: the behaviour every storage driver promises, as pytest tests.

A driver package subclasses it in a module named `test_*.py`, in a class named `Test*`, and provides a
`driver` fixture (plain or async) giving a driver on an empty store for each test. Everything the server relies
on is here: atomic whole-object writes, streaming in constant memory, resumable writers (upload sessions that
span writers, processes and killed processes, readable once committed), listings without
ghosts, and the refusal of paths that could leave the driver's root.

Class attributes a subclass may change:
- `streams_in_constant_memory`: False for drivers that keep objects in memory by design (the memory driver);
  the 64 MiB test then checks the round trip only.
- `big_object_size`: bytes of the big streamed object, and of the object replaced under a polling reader
  (64 MiB by default).
- `concurrent_tasks`, `concurrent_rounds`: tasks creating and removing objects at once under shared parents, and
  objects each of them creates (8 and 120).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from docker_registry.core import exceptions
from docker_registry.core.driver import Base

__all__ = ["DriverTestSuite"]

MiB = 1024 * 1024

BAD_PATHS = ["", ".", "..", "../escape", "a/../../escape", "/etc/passwd", "a\x00b", "a\\b", "a//b", "a/", "a/./b"]
"""Object paths every method must refuse with WrongArgumentsError (`a/` is a prefix, never an object)."""

BAD_PREFIXES = [p for p in BAD_PATHS if p not in ("", "a/")] + ["a//"]
"""Directory prefixes `list_directory` and `walk` must refuse; the root `""` and a trailing slash are fine."""

SIZES = [0, 1, 7, 1000, 64 * 1024 - 1, 64 * 1024 + 1, MiB + 7, 5 * MiB + 3]


def payload(size: int, seed: int = 0) -> bytes:
    """Random bytes, deliberately not valid UTF-8, so a driver that decodes anything fails."""
    head = b"\xff\xfe\x80\x00\xc3\x28"
    return (head + random.Random(seed).randbytes(size))[:size]


async def chunked(data: bytes, size: int = 64 * 1024, pause: bool = False) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        if pause:
            await asyncio.sleep(0)


async def read(driver: Base, path: str, offset: int = 0, length: int | None = None) -> bytes:
    parts = []
    async for chunk in driver.stream_read(path, offset, length):
        assert isinstance(chunk, bytes), f"stream_read must yield bytes, got {type(chunk).__name__}"
        parts.append(chunk)
    return b"".join(parts)


async def walked(driver: Base, prefix: str = "") -> set[str]:
    return {path async for path in driver.walk(prefix)}


async def assert_empty(driver: Base) -> None:
    """The store holds nothing: no object, no directory, no temporary file."""
    with pytest.raises(exceptions.FileNotFoundError):
        await driver.list_directory("")
    assert await walked(driver) == set()


def _never_started() -> tuple[AsyncIterator[bytes], list[bool]]:
    started: list[bool] = []

    async def gen() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"x"

    return gen(), started


async def _drain(iterator: AsyncIterator[object]) -> None:
    async for _ in iterator:
        pass


def _version(size: int, mark: int) -> bytes:
    """`size` bytes, different in every MiB and for every `mark`: a mix of two versions never equals either."""
    block = random.Random(mark).randbytes(MiB)
    whole, rest = divmod(size, MiB)
    return b"".join(i.to_bytes(8, "big") + block[8:] for i in range(whole)) + block[:rest]


async def _read_version(driver: Base, path: str, versions: dict[str, bytes], reading: asyncio.Event) -> str:
    """Read `path` whole and say which of `versions` it was, or describe what was read instead."""
    candidates, offset = dict(versions), 0
    try:
        async for chunk in driver.stream_read(path):
            reading.set()
            candidates = {name: v for name, v in candidates.items() if v[offset : offset + len(chunk)] == chunk}
            offset += len(chunk)
    except exceptions.FileNotFoundError:
        return f"no object after {offset} bytes"
    whole = [name for name, v in candidates.items() if len(v) == offset]
    return whole[0] if whole else f"{offset} bytes matching {sorted(candidates) or 'no version'}"


async def _poll_during(driver: Base, path: str, versions: dict[str, bytes], replace: Awaitable[None]) -> list[str]:
    """Read `path` again and again while `replace` runs, and once more after it; say what each read saw.

    `replace` starts once the first read has its first chunk, so that the reader holds the old object open.
    """
    reading, done = asyncio.Event(), asyncio.Event()

    async def poll() -> list[str]:
        seen: list[str] = []
        try:
            while True:
                last = done.is_set()
                seen.append(await _read_version(driver, path, versions, reading))
                if last:
                    return seen
                await asyncio.sleep(0)  # a driver whose reads never suspend must still let the replace run
        finally:
            reading.set()

    async def replace_while_reading() -> None:
        await reading.wait()
        try:
            await replace
        finally:
            done.set()

    seen, _ = await asyncio.gather(poll(), replace_while_reading())
    return seen


Operation = Callable[[Base, str], Awaitable[object]]

PATH_OPERATIONS: dict[str, Operation] = {
    "get_content": lambda d, p: d.get_content(p),
    "put_content": lambda d, p: d.put_content(p, b"x"),
    "stream_read": lambda d, p: _drain(d.stream_read(p)),
    "stream_write": lambda d, p: d.stream_write(p, chunked(b"x")),
    "exists": lambda d, p: d.exists(p),
    "remove": lambda d, p: d.remove(p),
    "remove_many": lambda d, p: d.remove_many(["fine", p]),
    "get_size": lambda d, p: d.get_size(p),
    "stat": lambda d, p: d.stat(p),
    "move_from": lambda d, p: d.move(p, "elsewhere"),
    "writer": lambda d, p: d.writer(p),
    "writer_append": lambda d, p: d.writer(p, append=True),
    "content_redirect_url": lambda d, p: d.content_redirect_url(p),
    "read_unfinished": lambda d, p: d.read_unfinished(p, 100),
    "append_bytes": lambda d, p: d.append_bytes(p, b"x", 0),
    "put_if_absent": lambda d, p: d.put_if_absent(p, b"x"),
}

PREFIX_OPERATIONS: dict[str, Operation] = {
    "list_directory": lambda d, p: d.list_directory(p),
    "walk": lambda d, p: _drain(d.walk(p)),
}

MISSING_OPERATIONS: dict[str, Operation] = {
    "get_content": lambda d, p: d.get_content(p),
    "stream_read": lambda d, p: _drain(d.stream_read(p)),
    "stream_read_offset": lambda d, p: _drain(d.stream_read(p, 10, 5)),
    "get_size": lambda d, p: d.get_size(p),
    "stat": lambda d, p: d.stat(p),
    "remove": lambda d, p: d.remove(p),
    "move": lambda d, p: d.move(p, "elsewhere"),
    "writer_append": lambda d, p: d.writer(p, append=True),
    "list_directory": lambda d, p: d.list_directory(p),
}


class DriverTestSuite:
    """Subclass as `Test<Name>` and provide a `driver` fixture on an empty store."""

    pytestmark = [pytest.mark.asyncio]
    streams_in_constant_memory = True
    big_object_size = 64 * MiB
    concurrent_tasks = 8
    concurrent_rounds = 120

    # --- exists -------------------------------------------------------------------------------------------
    async def test_exists_on_missing_object(self, driver: Base) -> None:
        assert await driver.exists("missing") is False
        assert await driver.exists("missing/deeper/object") is False

    async def test_exists_on_empty_object(self, driver: Base) -> None:
        await driver.put_content("empty", b"")
        assert await driver.exists("empty") is True
        assert await driver.get_content("empty") == b""
        assert await driver.get_size("empty") == 0
        assert await read(driver, "empty") == b""

    async def test_exists_on_directory_and_not_on_a_name_prefix(self, driver: Base) -> None:
        await driver.put_content("dir/sub/object", b"x")
        assert await driver.exists("dir") is True
        assert await driver.exists("dir/sub") is True
        assert await driver.exists("di") is False
        assert await driver.exists("dir/su") is False

    # --- whole-object round trips -------------------------------------------------------------------------
    @pytest.mark.parametrize("size", SIZES)
    async def test_put_get_round_trip(self, driver: Base, size: int) -> None:
        data = payload(size, seed=size)
        await driver.put_content("repo/object", data)
        assert await driver.get_content("repo/object") == data
        assert await driver.get_size("repo/object") == size
        assert await read(driver, "repo/object") == data

    @pytest.mark.parametrize("size", SIZES)
    async def test_stream_write_read_round_trip(self, driver: Base, size: int) -> None:
        data = payload(size, seed=size + 1)
        assert await driver.stream_write("repo/streamed", chunked(data, 10_000)) == size
        assert await read(driver, "repo/streamed") == data
        assert await driver.get_content("repo/streamed") == data
        assert (await driver.stat("repo/streamed")).size == size

    async def test_put_replaces_previous_object(self, driver: Base) -> None:
        await driver.put_content("object", payload(MiB, seed=1))
        await driver.put_content("object", b"short")
        assert await driver.get_content("object") == b"short"
        await driver.stream_write("object", chunked(b"streamed"))
        assert await driver.get_content("object") == b"streamed"

    async def test_unicode_paths(self, driver: Base) -> None:
        await driver.put_content("ünïcode/ファイル", b"data")
        assert await driver.get_content("ünïcode/ファイル") == b"data"
        assert await driver.list_directory("ünïcode") == ["ünïcode/ファイル"]

    async def test_stream_write_from_many_small_chunks(self, driver: Base) -> None:
        data = payload(3 * MiB + 5, seed=3)
        assert await driver.stream_write("small/chunks", chunked(data, 1000)) == len(data)
        assert await driver.get_content("small/chunks") == data

    # --- sizes and stat -----------------------------------------------------------------------------------
    async def test_get_size_and_stat(self, driver: Base) -> None:
        before = time.time()
        await driver.put_content("sized", payload(12345))
        st = await driver.stat("sized")
        assert st.size == 12345 == await driver.get_size("sized")
        assert before - 5 <= st.mtime <= time.time() + 5

    async def test_directory_is_not_an_object(self, driver: Base) -> None:
        await driver.put_content("dir/object", b"x")
        for op in (driver.get_content, driver.stat, driver.get_size, lambda p: _drain(driver.stream_read(p))):
            with pytest.raises(exceptions.FileNotFoundError):
                await op("dir")

    # --- missing objects ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("operation", list(MISSING_OPERATIONS))
    async def test_missing_object_raises_file_not_found(self, driver: Base, operation: str) -> None:
        await driver.put_content("other/object", b"x")
        with pytest.raises(exceptions.FileNotFoundError) as info:
            await MISSING_OPERATIONS[operation](driver, "missing/object")
        assert isinstance(info.value, builtins.FileNotFoundError)

    # --- remove -------------------------------------------------------------------------------------------
    async def test_remove_object(self, driver: Base) -> None:
        await driver.put_content("a/b/c", b"x")
        await driver.put_content("a/keep", b"y")
        await driver.remove("a/b/c")
        assert await driver.exists("a/b/c") is False
        assert await driver.exists("a/b") is False
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.get_content("a/b/c")
        assert await driver.list_directory("a") == ["a/keep"]

    async def test_remove_last_object_leaves_no_ghost_directories(self, driver: Base) -> None:
        await driver.put_content("deep/er/still/object", b"x")
        await driver.remove("deep/er/still/object")
        assert await driver.exists("deep") is False
        await assert_empty(driver)

    async def test_remove_prefix(self, driver: Base) -> None:
        for path in ("a/b/1", "a/b/2", "a/b/c/3", "a/c", "a/bb"):
            await driver.put_content(path, b"x")
        await driver.remove("a/b")
        for path in ("a/b/1", "a/b/2", "a/b/c/3"):
            assert await driver.exists(path) is False
        assert await driver.list_directory("a") == ["a/bb", "a/c"]
        assert await walked(driver) == {"a/bb", "a/c"}

    async def test_remove_everything(self, driver: Base) -> None:
        for path in ("x/1", "x/y/2", "z"):
            await driver.put_content(path, b"x")
        await driver.remove("x")
        await driver.remove("z")
        await assert_empty(driver)
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.list_directory("x")
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.remove("x")

    async def test_remove_many_objects(self, driver: Base) -> None:
        for path in ("a/1", "a/2", "b/c/3", "d/4", "keep"):
            await driver.put_content(path, b"x")
        await driver.remove_many(["a/1", "b/c/3", "missing", "a/missing/too", "d"])  # "d" is a directory
        assert await walked(driver) == {"a/2", "d/4", "keep"}
        assert await driver.exists("b") is False  # no ghost directories
        assert await driver.list_directory("") == ["a", "d", "keep"]
        await driver.remove_many([])

    async def test_remove_many_in_bulk(self, driver: Base) -> None:
        """More objects than one bulk request of any backend takes (S3: 1,000), spread over many directories."""
        paths = [f"blobs/{n % 37:02x}/{n:05d}/data" for n in range(1200)]
        await asyncio.gather(*(driver.put_content(path, b"x") for path in paths))
        await driver.put_content("blobs/00/kept/data", b"y")
        await driver.remove_many(paths)
        assert await walked(driver) == {"blobs/00/kept/data"}
        assert await driver.list_directory("blobs") == ["blobs/00"]

    # --- streaming with offsets and lengths ---------------------------------------------------------------
    @pytest.mark.parametrize(
        ("offset", "length"),
        [(0, None), (10, None), (0, 0), (100, 1000), (0, 3 * MiB), (MiB - 1, MiB + 2), (5, 10 * MiB)],
    )
    async def test_stream_read_offset_and_length(self, driver: Base, offset: int, length: int | None) -> None:
        data = payload(3 * MiB + 11, seed=4)
        await driver.put_content("ranged", data)
        end = None if length is None else offset + length
        assert await read(driver, "ranged", offset, length) == data[offset:end]

    async def test_stream_read_past_the_end_is_empty(self, driver: Base) -> None:
        await driver.put_content("short", b"12345")
        assert await read(driver, "short", 5) == b""
        assert await read(driver, "short", 100, 10) == b""
        assert await read(driver, "short", 4) == b"5"

    @pytest.mark.parametrize(("offset", "length"), [(-1, None), (0, -1), (-5, 3)])
    async def test_stream_read_rejects_bad_range(self, driver: Base, offset: int, length: int | None) -> None:
        await driver.put_content("object", b"12345")
        with pytest.raises(exceptions.WrongArgumentsError):
            await _drain(driver.stream_read("object", offset, length))

    # --- atomicity ----------------------------------------------------------------------------------------
    async def test_failed_stream_write_keeps_previous_object(self, driver: Base) -> None:
        await driver.put_content("dir/object", b"previous")

        async def failing() -> AsyncIterator[bytes]:
            yield payload(MiB, seed=5)
            raise RuntimeError("client went away")

        with pytest.raises(RuntimeError):
            await driver.stream_write("dir/object", failing())
        with pytest.raises(RuntimeError):
            await driver.stream_write("new/object", failing())
        assert await driver.get_content("dir/object") == b"previous"
        assert await driver.exists("new/object") is False
        assert await driver.list_directory("") == ["dir"]
        assert await driver.list_directory("dir") == ["dir/object"]
        assert await walked(driver) == {"dir/object"}

    async def test_readers_never_see_a_partial_stream_write(self, driver: Base) -> None:
        await driver.put_content("object", b"old")
        half_written = asyncio.Event()
        proceed = asyncio.Event()

        async def paused() -> AsyncIterator[bytes]:
            yield payload(MiB, seed=6)
            half_written.set()
            await proceed.wait()
            yield b"tail"

        task = asyncio.create_task(driver.stream_write("object", paused()))
        await half_written.wait()
        assert await driver.get_content("object") == b"old"
        assert await walked(driver) == {"object"}
        assert await driver.list_directory("") == ["object"]
        proceed.set()
        await task
        assert await driver.get_content("object") == payload(MiB, seed=6) + b"tail"

    async def test_concurrent_writers_one_whole_version_wins(self, driver: Base) -> None:
        versions = [bytes([65 + i]) * (3 * MiB) for i in range(2)]
        await asyncio.gather(*(driver.stream_write("contended", chunked(v, pause=True)) for v in versions))
        assert await driver.get_content("contended") in versions
        puts = [payload(MiB, seed=10 + i) for i in range(4)]
        await asyncio.gather(*(driver.put_content("contended", p) for p in puts))
        assert await driver.get_content("contended") in puts
        assert await walked(driver) == {"contended"}

    async def test_concurrent_creates_and_removes_under_shared_parents(self, driver: Base) -> None:
        """Many small uploads at once, each creating its own nested directories under a parent it shares with
        another task, reading its object back and removing it, so that one task creates into a parent while the
        other prunes it (the production race: `uploads/` pruned between creating it and creating `uploads/<id>`).

        Every write, read and remove must succeed. Tasks cycle through every way of creating an object: a writer
        closed or committed, put_content, stream_write, and a move into fresh directories.
        """

        async def one(task: int) -> None:
            pair = task // 2
            for r in range(self.concurrent_rounds):
                name = f"{task}-{r}"
                parent = f"shared/{pair}/{name}"
                path = f"{parent}/nested/data"
                data = payload(100 + task, seed=task * 1000 + r)
                kind = (task + r) % 5
                if kind == 0:
                    w = await driver.writer(path)
                    await w.write(data)
                    await w.close()
                elif kind == 1:
                    w = await driver.writer(path)
                    await w.write(data)
                    await w.commit()
                elif kind == 2:
                    await driver.put_content(path, data)
                elif kind == 3:
                    assert await driver.stream_write(path, chunked(data, 37)) == len(data)
                else:
                    staged = f"staging/{pair}/{name}/data"
                    await driver.put_content(staged, data)
                    await driver.move(staged, path)
                assert await driver.get_content(path) == data, f"{path} read back wrong"
                await driver.remove(path if r % 2 else parent)
                assert await driver.exists(path) is False

        tasks = [one(t) for t in range(self.concurrent_tasks)]
        failures = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, BaseException)]
        if failures:
            message = f"{len(failures)} of {self.concurrent_tasks} tasks failed, the first with {failures[0]!r}"
            raise AssertionError(message) from failures[0]
        await assert_empty(driver)

    async def test_replace_is_atomic_for_a_polling_reader(self, driver: Base) -> None:
        """A reader polling as fast as it can while a big object is replaced sees the old or the new one, whole.

        The object is replaced three ways: `put_content`, `stream_write`, and `move` of a staged object onto it.
        Publishing by copying onto the final name (or truncating and rewriting it) shows the reader a short or mixed
        object; removing the old object before renaming shows it none: the final step must be one rename.
        """
        size, path, staged = self.big_object_size, "atomic/object", "atomic/staged"
        current = _version(size, 0)
        await driver.put_content(path, current)

        async def by_put(data: bytes) -> None:
            await driver.put_content(path, data)

        async def by_stream(data: bytes) -> None:
            assert await driver.stream_write(path, chunked(data, MiB)) == len(data)

        async def by_move(data: bytes) -> None:
            await driver.move(staged, path)

        for mark, replace in enumerate((by_put, by_stream, by_move), start=1):
            new = _version(size + 1009 * mark, mark)
            if replace is by_move:
                await driver.put_content(staged, new)
            seen = await _poll_during(driver, path, {"old": current, "new": new}, replace(new))
            bad = [s for s in seen if s not in ("old", "new")]
            assert not bad, f"{replace.__name__}: {len(bad)} of {len(seen)} reads saw neither version whole: {bad[:3]}"
            assert seen[-1] == "new", f"{replace.__name__}: the last read, after the replace, saw {seen[-1]}"
            current = new
        assert await walked(driver) == {path}

    # --- list_directory -----------------------------------------------------------------------------------
    async def test_list_directory_on_missing_path(self, driver: Base) -> None:
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.list_directory("missing")
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.list_directory("")

    async def test_list_directory_on_an_object(self, driver: Base) -> None:
        await driver.put_content("dir/object", b"x")
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.list_directory("dir/object")

    async def test_list_directory(self, driver: Base) -> None:
        await driver.put_content("base/one", b"1")
        await driver.put_content("base/two", b"2")
        assert await driver.list_directory("base") == ["base/one", "base/two"]
        assert await driver.list_directory("base/") == ["base/one", "base/two"]

    async def test_list_directory_nested_gives_immediate_children_only(self, driver: Base) -> None:
        for path in ("a/b/c/d", "a/b/e", "a/f", "g"):
            await driver.put_content(path, b"x")
        assert await driver.list_directory("") == ["a", "g"]
        assert await driver.list_directory("a") == ["a/b", "a/f"]
        assert await driver.list_directory("a/b") == ["a/b/c", "a/b/e"]
        assert await driver.list_directory("a/b/c") == ["a/b/c/d"]

    # --- move ---------------------------------------------------------------------------------------------
    async def test_move(self, driver: Base) -> None:
        data = payload(MiB + 3, seed=7)
        await driver.put_content("uploads/u1/data", data)
        await driver.move("uploads/u1/data", "blobs/sha256/ab/abcd/data")
        assert await driver.get_content("blobs/sha256/ab/abcd/data") == data
        assert await driver.exists("uploads/u1/data") is False
        assert await driver.exists("uploads") is False
        assert await driver.list_directory("") == ["blobs"]

    async def test_move_replaces_destination(self, driver: Base) -> None:
        await driver.put_content("src", b"new")
        await driver.put_content("dst/object", b"old")
        await driver.move("src", "dst/object")
        assert await driver.get_content("dst/object") == b"new"
        assert await walked(driver) == {"dst/object"}

    @pytest.mark.parametrize("sync_source", [False, True])
    async def test_move_if_absent_moves_to_a_free_name(self, driver: Base, sync_source: bool) -> None:
        data = payload(100_000, seed=9)
        w = await driver.writer("uploads/u2/data")
        await w.write(data)
        await w.close()
        assert await driver.move_if_absent("uploads/u2/data", "blobs/sha256/cd/cdef/data", sync_source) is True
        assert await driver.get_content("blobs/sha256/cd/cdef/data") == data
        assert await walked(driver) == {"blobs/sha256/cd/cdef/data"}

    async def test_move_if_absent_keeps_an_existing_destination(self, driver: Base) -> None:
        await driver.put_content("dst/object", b"old")
        await driver.put_content("src", b"new")
        assert await driver.move_if_absent("src", "dst/object", sync_source=True) is False
        assert await driver.get_content("dst/object") == b"old"
        assert await driver.get_content("src") == b"new"

    async def test_mover_is_move_if_absent_as_a_blocking_call(self, driver: Base) -> None:
        """Where a driver offers `mover` (the registry calls it in a thread of its own), it moves as
        `move_if_absent` does: to a free name, not onto an object, and not from a missing source."""
        data = payload(20_000, seed=13)
        w = await driver.writer("uploads/u3/data")
        await w.write(data)
        await w.close()
        mover = driver.mover("uploads/u3/data", "blobs/sha256/ab/abcd/data", sync_source=True)
        if mover is None:
            return  # this driver moves only by awaiting, as `move_if_absent`'s tests hold it to
        assert await asyncio.to_thread(mover) is True
        assert await driver.get_content("blobs/sha256/ab/abcd/data") == data
        assert await walked(driver) == {"blobs/sha256/ab/abcd/data"}
        await driver.put_content("src", b"new")
        onto_existing = driver.mover("src", "blobs/sha256/ab/abcd/data")
        assert onto_existing is not None
        assert await asyncio.to_thread(onto_existing) is False
        assert await driver.get_content("blobs/sha256/ab/abcd/data") == data
        assert await driver.get_content("src") == b"new"
        from_nothing = driver.mover("uploads/none/data", "blobs/x", sync_source=True)
        assert from_nothing is not None
        with pytest.raises(exceptions.FileNotFoundError):
            await asyncio.to_thread(from_nothing)
        assert not await driver.exists("blobs/x")

    async def test_putter_is_put_if_absent_as_a_blocking_call(self, driver: Base) -> None:
        """Where a driver offers `putter` (the registry calls it in a thread of its own), it writes as
        `put_if_absent` does: to a free name, and never onto an object."""
        data = payload(20_000, seed=17)
        put = driver.putter("blobs/sha256/cd/cdef/data", data)
        if put is None:
            return  # this driver writes only by awaiting, as `put_if_absent`'s tests hold it to
        assert await asyncio.to_thread(put) is True
        assert await driver.get_content("blobs/sha256/cd/cdef/data") == data
        assert await walked(driver) == {"blobs/sha256/cd/cdef/data"}
        again = driver.putter("blobs/sha256/cd/cdef/data", b"other")
        assert again is not None
        assert await asyncio.to_thread(again) is False
        assert await driver.get_content("blobs/sha256/cd/cdef/data") == data

    async def test_unfinished_reader_is_read_unfinished_as_a_blocking_call(self, driver: Base) -> None:
        w = await driver.writer("uploads/u4/data")
        await w.write(b"unfinished")
        await w.close()
        read = driver.unfinished_reader("uploads/u4/data", 100)
        if read is None:
            return  # this driver reads an unfinished object only by awaiting, as `read_unfinished`'s tests hold it to
        assert await driver.read_unfinished("uploads/u4/data", 100) == b"unfinished"
        assert await asyncio.to_thread(read) == b"unfinished"
        too_small = driver.unfinished_reader("uploads/u4/data", 5)
        nothing = driver.unfinished_reader("uploads/none/data", 100)
        assert too_small is not None
        assert nothing is not None
        assert await asyncio.to_thread(too_small) is None
        assert await asyncio.to_thread(nothing) is None

    async def test_put_if_absent_writes_a_free_name(self, driver: Base) -> None:
        data = payload(20_000, seed=11)
        assert await driver.put_if_absent("blobs/sha256/ef/ef01/data", data) is True
        assert await driver.get_content("blobs/sha256/ef/ef01/data") == data
        assert await walked(driver) == {"blobs/sha256/ef/ef01/data"}

    async def test_put_if_absent_keeps_an_existing_object(self, driver: Base) -> None:
        await driver.put_content("dst/object", b"old")
        assert await driver.put_if_absent("dst/object", b"new") is False
        assert await driver.get_content("dst/object") == b"old"
        assert await walked(driver) == {"dst/object"}

    async def test_move_if_absent_of_a_missing_source(self, driver: Base) -> None:
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.move_if_absent("uploads/none/data", "blobs/x", sync_source=True)
        await assert_empty(driver)

    # --- walk ---------------------------------------------------------------------------------------------
    async def test_walk(self, driver: Base) -> None:
        paths = {"a/1", "a/b/2", "a/b/c/3", "ab/4", "z"}
        for path in paths:
            await driver.put_content(path, b"x")
        assert await walked(driver) == paths
        assert await walked(driver, "a") == {"a/1", "a/b/2", "a/b/c/3"}
        assert await walked(driver, "a/") == {"a/1", "a/b/2", "a/b/c/3"}
        assert await walked(driver, "a/b") == {"a/b/2", "a/b/c/3"}
        assert await walked(driver, "missing") == set()
        await driver.remove("a/b")
        assert await walked(driver) == {"a/1", "ab/4", "z"}

    # --- writers ------------------------------------------------------------------------------------------
    async def test_writer_close_then_resume_from_a_new_writer(self, driver: Base) -> None:
        pieces = [payload(n, seed=n) for n in (1, 1000, 300 * 1024, 7, 700 * 1024, 64 * 1024)]
        w = await driver.writer("uploads/u/data")
        assert w.size == 0
        for piece in pieces[:3]:
            assert await w.write(piece) == len(piece)
        assert w.size == sum(len(p) for p in pieces[:3])
        await w.close()
        first = b"".join(pieces[:3])
        assert await driver.get_content("uploads/u/data") == first

        w2 = await driver.writer("uploads/u/data", append=True)
        assert w2.size == len(first)
        for piece in pieces[3:]:
            await w2.write(piece)
        assert w2.size == sum(len(p) for p in pieces)
        await w2.commit()
        whole = b"".join(pieces)
        assert await driver.get_content("uploads/u/data") == whole
        assert await driver.get_size("uploads/u/data") == len(whole)
        assert await read(driver, "uploads/u/data", len(first)) == whole[len(first) :]

    async def test_writer_commit_then_move(self, driver: Base) -> None:
        data = payload(2 * MiB + 1, seed=8)
        w = await driver.writer("uploads/v/data")
        for start in range(0, len(data), 100_000):
            await w.write(data[start : start + 100_000])
        await w.commit()
        await driver.move("uploads/v/data", "blobs/v")
        assert await driver.get_content("blobs/v") == data
        assert await walked(driver) == {"blobs/v"}

    async def test_writer_truncates_without_append(self, driver: Base) -> None:
        await driver.put_content("object", b"previous content")
        w = await driver.writer("object")
        assert w.size == 0
        await w.write(b"new")
        await w.commit()
        assert await driver.get_content("object") == b"new"

    async def test_writer_cancel_discards_everything(self, driver: Base) -> None:
        w = await driver.writer("uploads/c/data")
        await w.write(payload(MiB, seed=9))
        await w.cancel()
        assert await driver.exists("uploads/c/data") is False
        await assert_empty(driver)

    async def test_writer_cancel_after_close_discards(self, driver: Base) -> None:
        w = await driver.writer("uploads/d/data")
        await w.write(b"abc")
        await w.close()
        resumed = await driver.writer("uploads/d/data", append=True)
        await resumed.cancel()
        await assert_empty(driver)

    async def test_writer_as_context_manager_keeps_content(self, driver: Base) -> None:
        async with await driver.writer("uploads/e/data") as w:
            await w.write(b"kept")
        assert await driver.get_content("uploads/e/data") == b"kept"

    async def test_writer_refuses_writes_after_close(self, driver: Base) -> None:
        w = await driver.writer("uploads/f/data")
        await w.close()
        with pytest.raises(exceptions.UsageError):
            await w.write(b"late")
        await w.close()  # closing twice is harmless

    # --- upload sessions: one object written by many writers, readable once committed --------------------------
    SESSION_CHUNKS = (3 * MiB, 7 * MiB, 1, 6 * MiB, 12345, 5 * MiB)
    """Chunks of a chunked upload, each through its own writer: under, over and at S3's 5 MiB part minimum."""

    async def _session(self, driver: Base, path: str, chunks: tuple[int, ...]) -> bytes:
        """Write `chunks` to `path` as a chunked upload does: a fresh writer, then one appending writer each, every
        one closed (not committed) and its `size` checked on opening; the bytes written."""
        written = b""
        for i, size in enumerate(chunks):
            w = await driver.writer(path, append=i > 0)
            assert w.size == len(written)
            piece = payload(size, seed=100 + i)
            for start in range(0, len(piece), 256 * 1024):
                await w.write(piece[start : start + 256 * 1024])
            assert w.size == len(written) + size
            await w.close()
            written += piece
        return written

    async def test_upload_session_spans_writers_and_commits_whole(self, driver: Base) -> None:
        """A writer opened with `append` that writes nothing commits the session (how the registry finishes an
        upload whose last chunk came before the digest); the object is then whole, stats and moves as any other."""
        written = await self._session(driver, "uploads/s/data", self.SESSION_CHUNKS)
        last = await driver.writer("uploads/s/data", append=True)
        assert last.size == len(written)
        await last.commit()
        assert await driver.get_size("uploads/s/data") == len(written)
        assert await read(driver, "uploads/s/data") == written
        await driver.move("uploads/s/data", "blobs/s")
        assert hashlib.sha256(await read(driver, "blobs/s")).digest() == hashlib.sha256(written).digest()
        assert await walked(driver) == {"blobs/s"}

    async def test_upload_session_last_chunk_committed_by_its_writer(self, driver: Base) -> None:
        written = await self._session(driver, "uploads/t/data", self.SESSION_CHUNKS[:3])
        w = await driver.writer("uploads/t/data", append=True)
        last = payload(2 * MiB + 5, seed=7)
        await w.write(last)
        await w.commit()
        assert await read(driver, "uploads/t/data") == written + last

    async def test_upload_session_opened_without_writes_changes_nothing(self, driver: Base) -> None:
        written = await self._session(driver, "uploads/n/data", self.SESSION_CHUNKS[:2])
        for _ in range(2):
            idle = await driver.writer("uploads/n/data", append=True)
            assert idle.size == len(written)
            await idle.close()
        w = await driver.writer("uploads/n/data", append=True)
        assert w.size == len(written)
        await w.commit()
        assert await read(driver, "uploads/n/data") == written

    async def test_upload_session_killed_writer_resumes_where_its_size_says(self, driver: Base) -> None:
        """A writer that never closes (its process was killed mid-chunk) leaves the session at a size between the
        last close and what it wrote, holding exactly those bytes: the client resumes from there."""
        path = "uploads/k/data"
        written = await self._session(driver, path, (3 * MiB, 6 * MiB))
        rest = payload(12 * MiB, seed=9)
        killed = await driver.writer(path, append=True)
        for start in range(0, len(rest), MiB):
            await killed.write(rest[start : start + MiB])
        del killed  # neither closed nor committed
        resumed = await driver.writer(path, append=True)
        held = resumed.size
        assert len(written) <= held <= len(written) + len(rest)
        whole = written + rest
        await resumed.write(whole[held:])
        await resumed.commit()
        assert await read(driver, path) == whole

    async def test_upload_session_small_chunks_appended_in_one_step(self, driver: Base) -> None:
        """`append_bytes` is a writer opened, written and closed (or committed) at once: it creates the session at
        size 0, continues it only at the size it holds, and writes nothing when that size is another."""
        path = "uploads/a/data"
        with pytest.raises(exceptions.FileNotFoundError):
            await driver.append_bytes(path, b"x", 5)
        assert await driver.append_bytes(path, b"first ", 0) == 0
        assert await driver.append_bytes(path, b"second", 6) == 6
        assert await driver.append_bytes(path, b"never", 6) == 12, "the size it holds, nothing written"
        w = await driver.writer(path, append=True)
        assert w.size == 12
        await w.close()
        assert await driver.append_bytes(path, b" last", 12, durable=True) == 12
        assert await read(driver, path) == b"first second last", "durable: readable as an object"
        assert await driver.append_bytes(path, b"anew", 0) == 0, "size 0: a new session, as writer() truncates"
        w = await driver.writer(path, append=True)
        await w.commit()
        assert await read(driver, path) == b"anew"

    async def test_upload_session_read_unfinished_is_none_or_the_bytes_written(self, driver: Base) -> None:
        """Before `commit`, a driver may read a session's bytes (a filesystem: the file itself) or say it cannot
        (None); it never gives anything but exactly what was written, nor more than the limit."""
        path = "uploads/r/data"
        assert await driver.read_unfinished(path, MiB) is None, "no session: nothing to read"
        data = payload(20_000, seed=12)
        w = await driver.writer(path)
        await w.write(data[:7_000])
        await w.close()
        w = await driver.writer(path, append=True)
        await w.write(data[7_000:])
        await w.close()
        got = await driver.read_unfinished(path, MiB)
        assert got is None or got == data
        assert await driver.read_unfinished(path, len(data) - 1) is None, "more than the limit"
        w = await driver.writer(path, append=True)
        await w.commit()
        assert await read(driver, path) == data, "reading changed nothing"

    async def test_upload_session_cancelled_or_removed_leaves_nothing(self, driver: Base) -> None:
        await self._session(driver, "uploads/c1/data", self.SESSION_CHUNKS[:3])
        w = await driver.writer("uploads/c1/data", append=True)
        await w.cancel()
        await self._session(driver, "uploads/c2/data", self.SESSION_CHUNKS[:3])
        await driver.remove("uploads/c2")
        await assert_empty(driver)

    # --- serving hints ------------------------------------------------------------------------------------
    async def test_local_path_is_none_or_the_same_bytes(self, driver: Base) -> None:
        data = payload(MiB + 1, seed=11)
        await driver.put_content("served/object", data)
        local = driver.local_path("served/object")
        if local is not None:
            with open(local, "rb") as f:  # noqa: ASYNC230 - a test reading what the driver wrote
                assert f.read() == data

    async def test_content_redirect_url_is_none_or_http(self, driver: Base) -> None:
        await driver.put_content("served/object", b"x")
        url = await driver.content_redirect_url("served/object")
        assert url is None or url.startswith(("http://", "https://"))

    # --- paths that could leave the root ------------------------------------------------------------------
    @pytest.mark.parametrize("path", BAD_PATHS)
    @pytest.mark.parametrize("operation", [*PATH_OPERATIONS, "move_to", "local_path"])
    async def test_bad_path_refused_before_touching_backend(self, driver: Base, operation: str, path: str) -> None:
        if operation == "move_to":
            await driver.put_content("source", b"x")
            with pytest.raises(exceptions.WrongArgumentsError):
                await driver.move("source", path)
            assert await walked(driver) == {"source"}
            return
        if operation == "local_path":
            with pytest.raises(exceptions.WrongArgumentsError):
                driver.local_path(path)
        elif operation == "stream_write":
            chunks, started = _never_started()
            with pytest.raises(exceptions.WrongArgumentsError):
                await driver.stream_write(path, chunks)
            assert not started, "the chunks were consumed before the path was checked"
        else:
            with pytest.raises(exceptions.WrongArgumentsError):
                await PATH_OPERATIONS[operation](driver, path)
        await assert_empty(driver)

    @pytest.mark.parametrize("path", BAD_PREFIXES)
    @pytest.mark.parametrize("operation", list(PREFIX_OPERATIONS))
    async def test_bad_prefix_refused(self, driver: Base, operation: str, path: str) -> None:
        await driver.put_content("object", b"x")
        with pytest.raises(exceptions.WrongArgumentsError):
            await PREFIX_OPERATIONS[operation](driver, path)

    # --- big objects in constant memory -------------------------------------------------------------------
    async def test_big_object_streams_in_constant_memory(self, driver: Base) -> None:
        size = self.big_object_size
        block = random.Random(12).randbytes(MiB)
        written = hashlib.sha256()

        async def produce() -> AsyncIterator[bytes]:
            for i in range(size // MiB):
                chunk = i.to_bytes(8, "big") + block[8:]
                written.update(chunk)
                yield chunk

        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            count = await driver.stream_write("big/object", produce())
            seen, total = hashlib.sha256(), 0
            async for chunk in driver.stream_read("big/object"):
                seen.update(chunk)
                total += len(chunk)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            if not was_tracing:
                tracemalloc.stop()
        assert count == total == size == await driver.get_size("big/object")
        assert seen.hexdigest() == written.hexdigest()
        if self.streams_in_constant_memory:
            assert peak < size // 4, f"peak {peak / MiB:.1f} MiB while streaming {size / MiB:.0f} MiB"
