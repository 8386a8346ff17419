"""The Range header of blob GETs: which windows are served, which requests are refused with 416, and how several
windows are framed in one answer."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator, Callable

import pytest

from docker_registry.server.http.files import framed_reads
from docker_registry.server.http.ranges import Window, byte_ranges, framing
from docker_registry.server.registry.errors import RANGE_INVALID, RegistryError


@pytest.mark.parametrize(
    ("header", "windows"),
    [
        ("bytes=0-9", [(0, 10)]),
        ("bytes=10-", [(10, 100)]),
        ("bytes=90-1000", [(90, 100)]),
        ("bytes=-5", [(95, 100)]),
        ("bytes=-500", [(0, 100)]),
        ("BYTES = 1-1", [(1, 2)]),
        ("bytes= 0-1", [(0, 2)]),
        ("bytes=0-99999999999999999999", [(0, 100)]),
        ("bytes=5-" + "9" * 100, [(5, 100)]),
        ("bytes=0-1,3-4", [(0, 2), (3, 5)]),
        ("bytes=50-59, 0-9 ,-5", [(50, 60), (0, 10), (95, 100)]),  # in the order asked
        ("bytes=0-9,,200-", [(0, 10)]),  # an empty element skipped, a range past the end left out
        ("bytes=0-49,50-99", [(0, 50), (50, 100)]),  # adding up to the whole blob: not more
    ],
)
def test_served_windows(header: str, windows: list[Window]) -> None:
    assert byte_ranges(header, 100) == windows


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "items=0-1",
        "bytes=abc",
        "bytes=5-2",
        "bytes=-",
        "bytes=",
        "bytes=,",
        "bytes=1-2-3",
        "bytes=0-9,abc",  # one malformed range: the whole set is
        "bytes=0-9,5-2",
        "bytes=0-,0-",  # overlaps adding up to more than the blob
        "bytes=0-59,40-99",
    ],
)
def test_ignored_ranges_serve_everything(header: str | None) -> None:
    assert byte_ranges(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100), ("bytes=-1", 0), ("bytes=100-,300-400", 100)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RegistryError) as info:
        byte_ranges(header, size)
    assert info.value.error is RANGE_INVALID
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}


def test_framing_of_the_whole_blob_one_window_and_several() -> None:
    headers = {"Content-Type": "application/octet-stream"}
    whole = framing(None, 100, headers)
    assert (whole.status, whole.length, whole.parts, whole.end, headers) == (
        200,
        100,
        [(b"", 0, 100)],
        b"",
        {"Content-Type": "application/octet-stream"},
    )
    one = framing([(10, 20)], 100, headers)
    assert (one.status, one.length, one.parts, one.end) == (206, 10, [(b"", 10, 20)], b"")
    assert headers["Content-Range"] == "bytes 10-19/100"

    blob = bytes(range(100))
    headers = {"Content-Type": "application/octet-stream"}
    several = framing([(90, 100), (0, 5)], 100, headers)
    body = b"".join(head + blob[start:stop] for head, start, stop in several.parts) + several.end
    assert several.status == 206
    assert several.length == len(body)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    parts = [(str(part["Content-Range"]), part.get_payload(decode=True)) for part in message.iter_parts()]
    assert parts == [("bytes 90-99/100", blob[90:]), ("bytes 0-4/100", blob[:5])]
    again: dict[str, str] = {}
    framing([(90, 100), (0, 5)], 100, again)
    assert again["Content-Type"] != headers["Content-Type"]  # a new random boundary each time


async def test_storage_reads_are_framed_to_each_windows_bytes_exactly() -> None:
    """Streamed from storage (S3), each window's bytes are what its framing announced, wherever the storage's chunks
    end; a read that gives fewer is an error (the answer is cut), never a gap framed as data."""
    blob = bytes(range(256)) * 40
    reads: list[tuple[int, int]] = []

    def reading(give: Callable[[int, int], bytes]) -> Callable[[int, int], AsyncIterator[bytes]]:
        async def read(start: int, stop: int) -> AsyncIterator[bytes]:
            reads.append((start, stop))
            data = give(start, stop)
            for at in range(0, len(data), 7):  # in pieces, as a stream comes
                yield data[at : at + 7]

        return read

    async def body(windows: list[Window] | None, give: Callable[[int, int], bytes]) -> tuple[bytes, bytes]:
        framed = framing(windows, len(blob), {})
        expected = b"".join(head + blob[start:stop] for head, start, stop in framed.parts) + framed.end
        return b"".join([chunk async for chunk in framed_reads(framed, reading(give))]), expected

    exact = body([(9000, 9100), (0, 30), (35, 36), (100, 200)], lambda start, stop: blob[start:stop])
    got, expected = await exact
    assert got == expected
    assert reads == [(9000, 9100), (0, 200)]  # one read for the windows that follow each other closely
    got, expected = await body(None, lambda start, stop: blob[start:stop])
    assert got == expected == blob
    got, expected = await body([(0, 5), (5, 20), (10, 30)], lambda start, stop: blob[start:])  # touching,
    assert got == expected  # overlapping (a run ends: no read goes back), and more given than asked
    assert reads[-2:] == [(0, 20), (10, 30)]
    reads.clear()
    empty = framing(None, 0, {})
    assert [chunk async for chunk in framed_reads(empty, reading(lambda start, stop: b""))] == []
    assert reads == [(0, 0)]  # the empty blob's read still runs: a blob missing from storage raises there
    short = body([(9000, 9100), (0, 30)], lambda start, stop: blob[start : stop - 1])
    with pytest.raises(OSError, match="99 of the 100 bytes from 9000"):
        await short
    reads.clear()
    far = 2 * 1024 * 1024
    framed = framing([(0, 10), (far, far + 10)], far + 20, {})
    [chunk async for chunk in framed_reads(framed, reading(lambda start, stop: bytes(stop - start)))]
    assert reads == [(0, 10), (far, far + 10)]  # farther apart than a request costs: each window its own read
