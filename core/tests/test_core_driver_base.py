"""`Base` validates the arguments of every public method once, then calls the driver's protected implementation."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import pytest

from docker_registry.core import exceptions
from docker_registry.core.driver import Base, Stat, Writer


class Recording(Base):
    """Implements every protected method by recording its arguments; stores nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, args))

    async def _get_content(self, path: str) -> bytes:
        self._record("_get_content", path)
        return b""

    async def _put_content(self, path: str, data: bytes) -> None:
        self._record("_put_content", path, data)

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        self._record("_stream_read", path, offset, length)
        yield b"x"

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        self._record("_stream_write", path)
        return 0

    async def _list_directory(self, prefix: str) -> list[str]:
        self._record("_list_directory", prefix)
        return []

    async def _exists(self, path: str) -> bool:
        self._record("_exists", path)
        return False

    async def _remove(self, path: str) -> None:
        self._record("_remove", path)

    async def _stat(self, path: str) -> Stat:
        self._record("_stat", path)
        return Stat(size=42, mtime=0.0)

    async def _move(self, src: str, dst: str) -> None:
        self._record("_move", src, dst)

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        self._record("_walk", prefix)
        yield "object"

    async def _writer(self, path: str, append: bool) -> Writer:
        self._record("_writer", path, append)
        raise exceptions.NotImplementedError("no writers here")


async def _drain(iterator: AsyncIterator[object]) -> list[object]:
    return [item async for item in iterator]


CALLS: dict[str, Callable[[Base, str], Awaitable[object] | object]] = {
    "get_content": lambda d, p: d.get_content(p),
    "put_content": lambda d, p: d.put_content(p, b"x"),
    "stream_read": lambda d, p: d.stream_read(p),
    "stream_write": lambda d, p: d.stream_write(p, _drain_never()),
    "list_directory": lambda d, p: d.list_directory(p),
    "exists": lambda d, p: d.exists(p),
    "remove": lambda d, p: d.remove(p),
    "get_size": lambda d, p: d.get_size(p),
    "stat": lambda d, p: d.stat(p),
    "move_from": lambda d, p: d.move(p, "ok"),
    "move_to": lambda d, p: d.move("ok", p),
    "walk": lambda d, p: d.walk(p),
    "writer": lambda d, p: d.writer(p),
    "local_path": lambda d, p: d.local_path(p),
    "content_redirect_url": lambda d, p: d.content_redirect_url(p),
}


async def _drain_never() -> AsyncIterator[bytes]:
    raise AssertionError("the chunks were consumed")
    yield b""  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize("method", list(CALLS))
@pytest.mark.parametrize("path", ["../escape", "/abs", "a//b", "a\x00b"])
async def test_bad_path_never_reaches_the_driver(method: str, path: str) -> None:
    driver = Recording()
    with pytest.raises(exceptions.WrongArgumentsError):
        await _call(driver, method, path)
    assert driver.calls == []


async def _call(driver: Base, method: str, path: str) -> None:
    result = CALLS[method](driver, path)  # the methods that are not async (stream_read, walk, local_path) raise here
    if isinstance(result, Awaitable):
        await result


async def test_valid_arguments_reach_the_driver_unchanged_except_a_prefix_slash() -> None:
    driver = Recording()
    await driver.get_content("a/b")
    await driver.put_content("a/b", b"data")
    assert await _drain(driver.stream_read("a/b", 3, 4)) == [b"x"]
    await driver.list_directory("a/")
    await driver.list_directory()
    assert await _drain(driver.walk("a/")) == ["object"]
    await driver.move("a/b", "c/d")
    await driver.remove("a")
    assert driver.calls == [
        ("_get_content", ("a/b",)),
        ("_put_content", ("a/b", b"data")),
        ("_stream_read", ("a/b", 3, 4)),
        ("_list_directory", ("a",)),
        ("_list_directory", ("",)),
        ("_walk", ("a",)),
        ("_move", ("a/b", "c/d")),
        ("_remove", ("a",)),
    ]


@pytest.mark.parametrize(("offset", "length"), [(-1, None), (0, -1), ("0", None), (0, 1.5)])
def test_bad_range_is_refused_at_the_call(offset: int, length: int | None) -> None:
    driver = Recording()
    with pytest.raises(exceptions.WrongArgumentsError):
        driver.stream_read("object", offset, length)
    assert driver.calls == []


async def test_defaults_size_from_stat_no_local_path_no_redirect() -> None:
    driver = Recording()
    assert await driver.get_size("object") == 42
    assert driver.calls == [("_stat", ("object",))]
    assert driver.local_path("object") is None
    assert await driver.content_redirect_url("object") is None


def test_a_driver_must_implement_the_protected_methods() -> None:
    class Incomplete(Base):
        async def _get_content(self, path: str) -> bytes:
            return b""

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]  # what this test checks: the abstract methods are enforced
