"""The Range header of blob GETs: which window is served, which requests are refused with 416."""

from __future__ import annotations

import pytest

from docker_registry.server.http.ranges import byte_range
from docker_registry.server.registry.errors import RANGE_INVALID, RegistryError


@pytest.mark.parametrize(
    ("header", "window"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=90-1000", (90, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=-500", (0, 100)),
        ("BYTES = 1-1", (1, 2)),
        ("bytes= 0-1", (0, 2)),
        ("bytes=0-99999999999999999999", (0, 100)),
        ("bytes=5-" + "9" * 100, (5, 100)),
    ],
)
def test_single_ranges(header: str, window: tuple[int, int]) -> None:
    assert byte_range(header, 100) == window


@pytest.mark.parametrize(
    "header", [None, "", "items=0-1", "bytes=0-1,3-4", "bytes=abc", "bytes=5-2", "bytes=-", "bytes=", "bytes=1-2-3"]
)
def test_ignored_ranges_serve_everything(header: str | None) -> None:
    assert byte_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100), ("bytes=-1", 0)]
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RegistryError) as info:
        byte_range(header, size)
    assert info.value.error is RANGE_INVALID
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}
