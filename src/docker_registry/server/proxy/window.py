"""The bytes of a blob fetch that have arrived from the upstream but may not be in its data file yet.

A cold pull's client used to get each byte only once the fetch had hashed it and written it to the file the
readers follow, and the upstream was not read meanwhile: on a busy machine a 4 MiB `write` waited 0.1 to 0.3 s for
the disk and the hashing thread 10 to 160 ms for a CPU, so the client went at the speed of the disk, a chunk behind
the upstream, where Distribution's client streams straight from the upstream. Now a fetch receives ahead of its
writer, keeping here what its file does not hold yet, and its own worker's readers send that from memory: the first
client streams at the upstream's speed while the blob is hashed and written behind it.

The memory is bounded twice: a fetch holds at most `WINDOW` bytes beyond its file, and all the fetches of a worker
at most `BUDGET` together. Past either it waits for its writer, as every fetch did before, but never while it holds
nothing beyond its file (each fetch always moves at least at the writer's pace).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable

WINDOW = 32 * 1024 * 1024
"""Bytes one fetch may hold beyond what its data file holds (the upstream's chunks are up to a few MiB)."""
BUDGET = 128 * 1024 * 1024
"""Bytes the fetches of one worker may hold together."""


class Window:
    """A contiguous run of received chunks, from the first the data file may not hold to the last received."""

    def __init__(self, data_path: str) -> None:
        self._data_path = data_path
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self.end = 0
        """How many bytes were received: the offset the next chunk starts at."""
        self.held = 0
        """Bytes held at the last `trim`, and those added since."""

    def add(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append((self.end, chunk))
            self.end += len(chunk)
            self.held += len(chunk)

    def trim(self) -> int:
        """Let go of the chunks the data file holds (the readers send those from it); the bytes still held."""
        try:
            on_file = os.stat(self._data_path).st_size  # one stat per chunk, on the loop: no thread hop
        except FileNotFoundError:
            on_file = 0  # the writer has not created it yet
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= on_file:
            self._chunks.popleft()
        self.held = self.end - self._chunks[0][0] if self._chunks else 0
        return self.held

    def at(self, offset: int) -> memoryview | None:
        """The received bytes from `offset` to the end of the chunk holding it; None when not held (on file
        already, or not received yet)."""
        for start, chunk in self._chunks:
            if start <= offset < start + len(chunk):
                return memoryview(chunk)[offset - start :]
        return None


def must_wait(window: Window, windows: Iterable[Window]) -> bool:
    """True when `window`'s fetch should let its writer catch up before receiving more: it holds more than
    `WINDOW`, or something while the fetches of its worker (`windows`) hold more than `BUDGET` together."""
    held = window.trim()
    if held == 0:
        return False
    return held > WINDOW or sum(other.held for other in windows) > BUDGET
