"""Group commit: a worker's writes, queued to one thread that runs all those waiting in one transaction.

Every durable write ends in an fsync of the database's log (1-2 ms here) and a hand-over of its write lock; a tag
PUT or a blob link is otherwise tiny. The writer thread takes the first write in the queue, then the gate that
orders the writers of all worker processes (SQLite: `writegate`), then every other write waiting behind it (up to
`MAX_BATCH`: those that came while it waited for the gate too), runs them in one transaction (a write that refuses
rolls back alone and gets its own error: see `StoreBase.run_batch`), commits once, gives the gate back, and only
then answers each of them: a client is told "done" only after a durable commit that holds its change, and N writes
share one fsync. A batch is durable if any of its
writes asks to be (upload-session bookkeeping does not, see `engine.write_transaction`).

A write that waited in the queue longer than the lock timeout is answered with a timeout (503) without running:
behind a lock held elsewhere, queued writes fail in about the lock timeout instead of one after another.

A write may bring a blocking step to run after its commit (`submit(then=...)`), which may in turn answer with a
`Followup`, a write for the next batch: the closing PUT of an upload pins its blob, publishes it, and links it in
one trip to this thread. A follow-up's deadline counts from when it is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import exc as db_errors

from .base import StoreBase

log = logging.getLogger(__name__)

MAX_BATCH = 64
T = TypeVar("T")


@dataclass(slots=True)
class _Write:
    run: Callable[[], Any]
    durable: bool
    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(repr=False)
    then: Callable[[Any], Any] | None = None
    """Run by the writer thread on the write's result once its batch committed and the gate is given back; what
    it returns (or raises) is the answer, unless it returns a `Followup`, whose own outcome then is."""
    taken: bool = False
    """The writer thread has it in a batch: it answers it, however long that takes (set under `_TAKING`)."""
    abandoned: bool = False
    """Answered as stalled before the writer thread took it: it is never run (set under `_TAKING`)."""


@dataclass(frozen=True, slots=True)
class Followup(Generic[T]):
    """What a write's `then` may answer instead of its result: another write, run in the writer's next batch (ahead
    of what waits in the queue), whose outcome is then the answer. A step that must come after one commit and
    before the next (a blob published between its pin and its link) so costs no trip back to the event loop and
    out again."""

    run: Callable[[], T]
    durable: bool = True


_Outcome = tuple[_Write, Any, BaseException | None]
"""A write and its result or error."""


STALL_MARGIN = 1.0
"""Seconds past twice the lock timeout after which a write the writer thread has not taken yet is answered as
timed out (see `WriteQueue.submit`)."""
_TAKING = threading.Lock()
"""Orders the writer thread taking a write into a batch against the event loop abandoning it as stalled: a write
is either run and answered by the thread, or answered as stalled and never run."""


def _stalled(write: _Write) -> None:
    with _TAKING:
        if write.taken or write.future.done():
            return
        write.abandoned = True
    write.future.set_exception(db_errors.TimeoutError("the database's write gate is held by a stopped process"))


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled, or answered as stalled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)


def _followed(outcomes: list[_Outcome]) -> list[_Outcome]:
    """The outcomes, each write's `then` run on its result (a write that failed skips it)."""
    followed: list[_Outcome] = []
    for write, result, error in outcomes:
        if write.then is not None and error is None:
            try:
                result = write.then(result)
            except Exception as failure:
                result, error = None, failure
        followed.append((write, result, error))
    return followed


def _answer(outcomes: list[_Outcome]) -> None:
    """Hand the outcomes to their event loops, one wake-up per loop (not one per write)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for write, result, error in outcomes:
        by_loop.setdefault(write.loop, []).append((write.future, result, error))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle_all, settled)


class WriteQueue:
    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._next: list[_Write] = []
        """Follow-up writes (`Followup`), for the writer's next batch: touched by the writer thread only."""
        self._thread = threading.Thread(target=self._serve, name="db-writer", daemon=True)
        self._thread.start()

    def submit(
        self, run: Callable[[], Any], durable: bool, then: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        """`then` is a blocking step that must follow the commit (publishing a blob its claim pinned): run in this
        thread, it spares the caller a hand-off to another thread and back after the answer. It may answer with a
        `Followup` (the blob's link), run in the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        lock_timeout = self._store.lock_timeout
        write = _Write(run, durable, time.monotonic() + lock_timeout, loop, future, then)
        self._queue.put(write)
        if self._store.gate is not None:
            # not taken by then: this writer waits for the gate, whose holder is stopped (SIGSTOP, a
            # `garbage-collect` suspended with Ctrl-Z); the write is answered now and never run. One taken is
            # answered by the thread, however long its batch takes.
            stalled = loop.call_later(2 * lock_timeout + STALL_MARGIN, _stalled, write)
            future.add_done_callback(lambda _: stalled.cancel())
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        try:
            self._serve_until_closed()
        finally:
            self._store.release_thread_connection()

    def _serve_until_closed(self) -> None:
        stopping = False
        while True:
            if self._next:
                first = self._next.pop(0)
            elif stopping:
                return
            else:
                queued = self._queue.get()
                if queued is None:
                    return
                first = queued
            # the gate first, the rest of the queue after: what arrives while another worker's writer holds the
            # database joins this batch instead of waiting for the next turn (on this machine the gate is held
            # almost all the time under load, and each turn is dear: one fsync, one wake-up of each waiter)
            with self._gate():
                batch, stop = self._drain(first)
                outcomes = self._run(batch)
            stopping = stopping or stop
            # after the gate is given back (the other worker's writer goes on meanwhile); the writes with nothing to
            # follow them first, so they do not wait for the blocking steps of the others
            plain = [outcome for outcome in outcomes if outcome[0].then is None]
            if plain:
                _answer(plain)
            if len(plain) < len(outcomes):
                self._answer_or_follow(_followed([outcome for outcome in outcomes if outcome[0].then is not None]))

    def _answer_or_follow(self, outcomes: list[_Outcome]) -> None:
        """Answer the outcomes, but queue each `Followup` for the next batch, to be answered with its own."""
        answered: list[_Outcome] = []
        for write, result, error in outcomes:
            if error is None and isinstance(result, Followup):
                deadline = time.monotonic() + self._store.lock_timeout
                self._next.append(_Write(result.run, result.durable, deadline, write.loop, write.future))
            else:
                answered.append((write, result, error))
        if answered:
            _answer(answered)

    def _gate(self) -> contextlib.AbstractContextManager[None]:
        gate = self._store.gate
        return contextlib.nullcontext() if gate is None else gate.held()

    def _drain(self, first: _Write) -> tuple[list[_Write], bool]:
        """`first` and the writes queued behind it (up to `MAX_BATCH`); True when the queue says to stop."""
        batch = [first, *self._next]
        self._next.clear()
        while len(batch) < MAX_BATCH:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
        return batch, False

    def _run(self, batch: list[_Write]) -> list[_Outcome]:
        """Each write's outcome: the batch's result or error, or a timeout for one that waited too long."""
        with _TAKING:
            batch = [w for w in batch if not w.abandoned]
            for w in batch:
                w.taken = True
        if not batch:
            return []
        now = time.monotonic()
        answers: list[_Outcome] = []
        if any(w.deadline < now for w in batch):
            timeout = db_errors.TimeoutError("a write waited in the queue longer than the lock timeout")
            answers = [(w, None, timeout) for w in batch if w.deadline < now]
            batch = [w for w in batch if w.deadline >= now]
            if not batch:
                return answers
        outcomes: list[tuple[Any, BaseException | None]]
        try:
            outcomes = self._store.run_batch(
                [w.run for w in batch], durable=any(w.durable for w in batch), keep_connection=True, gate_held=True
            )
        except Exception as failure:  # the transaction as a whole failed (lock timeout, database gone): all of them
            outcomes = [(None, failure)] * len(batch)
        return answers + [(write, result, error) for write, (result, error) in zip(batch, outcomes, strict=True)]
