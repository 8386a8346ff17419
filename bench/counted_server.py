"""Our registry with counters on its write path, for `profile_writes.py`: `python bench/counted_server.py CONFIG DIR`.

Nothing in the server changes; this wraps, by monkeypatching before it starts, what a small write costs besides
bytes: database write transactions (durable or not, and which query ran them) and read connections, `PRAGMA
synchronous` switches, SQL statements by kind, thread-pool hops (by the function that hopped), Python-level
fsyncs, /proc reads for process identities, and lease renewals. Every process (the master, and the workers,
forked or spawned: a spawned worker imports this file as `__mp_main__` and patches itself the same way) writes its
counts to `DIR/counts-<pid>.json` on SIGUSR1. fsyncs that SQLite makes in C are not seen here: count them with
`strace -f -c`.

"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
OUT_DIR = Path(os.environ.get("BENCH_COUNTS_DIR", "/tmp"))


def _name(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__qualname__", None) or type(func).__name__


def _dump(*_: object) -> None:
    (OUT_DIR / f"counts-{os.getpid()}.json").write_text(json.dumps(dict(COUNTS)))


def install() -> None:
    import sqlalchemy as sa
    from sqlalchemy import event

    from docker_registry.server.registry import process_identity, uploads
    from docker_registry.server.store import base, engine

    # --- database ---------------------------------------------------------------------------------------------
    original_write_transaction = base.write_transaction

    @contextmanager
    def write_transaction(
        eng: sa.Engine, durable: bool = True, gate: Any = None, signal: bool = True, kept: Any = None
    ) -> Iterator[sa.Connection]:
        COUNTS["db.write_transaction" + ("" if durable else ".not_durable")] += 1
        with original_write_transaction(eng, durable, gate, signal, kept) as conn:
            yield conn

    base.write_transaction = write_transaction  # type: ignore[assignment]

    original_write, original_read = base.StoreBase._write, base.StoreBase._read

    def _write(self: Any, work: Callable[[sa.Connection], Any], *, durable: bool = True, signal: bool = True) -> Any:
        COUNTS[f"db.write_by.{sys._getframe(1).f_code.co_name}"] += 1
        return original_write(self, work, durable=durable, signal=signal)

    def _read(self: Any, work: Callable[[sa.Connection], Any]) -> Any:
        caller = sys._getframe(1).f_code.co_name
        if caller == "_scalar":
            caller = sys._getframe(2).f_code.co_name
        COUNTS[f"db.read_by.{caller}"] += 1
        return original_read(self, work)

    base.StoreBase._write = _write  # type: ignore[method-assign]
    base.StoreBase._read = _read  # type: ignore[method-assign]

    original_set_synchronous = engine._set_synchronous

    def _set_synchronous(conn: sa.Connection, level: str) -> None:
        COUNTS[f"db.pragma_synchronous.{level}"] += 1
        original_set_synchronous(conn, level)

    engine._set_synchronous = _set_synchronous

    original_create_engine = engine.create_engine

    def create_engine(url: str, *args: Any, **kwargs: Any) -> sa.Engine:
        created = original_create_engine(url, *args, **kwargs)

        @event.listens_for(created, "before_cursor_execute")
        def _statement(*args: Any) -> None:
            COUNTS[f"db.sql.{args[2].lstrip().split(None, 1)[0].upper()}"] += 1

        @event.listens_for(created, "commit")
        def _commit(*args: Any) -> None:
            COUNTS["db.sql.COMMIT"] += 1

        @event.listens_for(created.pool, "checkout")
        def _checkout(*args: Any) -> None:
            COUNTS["db.pool_checkout"] += 1

        @event.listens_for(created.pool, "connect")
        def _connect(*args: Any) -> None:
            COUNTS["db.new_connection"] += 1

        return created

    engine.create_engine = create_engine
    from docker_registry.server import application  # noqa: F401 - imports every module that took create_engine

    for name, module in list(sys.modules.items()):
        if name.startswith("docker_registry") and getattr(module, "create_engine", None) is original_create_engine:
            module.create_engine = create_engine  # type: ignore[attr-defined]

    # --- thread hops ------------------------------------------------------------------------------------------
    original_to_thread = asyncio.to_thread

    async def to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        COUNTS["thread_hop"] += 1
        COUNTS[f"thread_hop.{_name(func)}"] += 1
        return await original_to_thread(func, *args, **kwargs)

    asyncio.to_thread = to_thread  # type: ignore[assignment]

    original_executor = asyncio.base_events.BaseEventLoop.run_in_executor

    def run_in_executor(self: Any, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        COUNTS["executor_hop"] += 1  # to_thread's hops and any other (aiohttp's)
        return original_executor(self, executor, func, *args)

    asyncio.base_events.BaseEventLoop.run_in_executor = run_in_executor  # type: ignore[method-assign]

    from docker_registry.server.store import batching

    original_submit = batching.WriteQueue.submit

    def submit(self: Any, run: Callable[[], Any], durable: bool, then: Callable[[Any], Any] | None = None) -> Any:
        COUNTS["writer_hop"] += 1  # a trip to the database writer's thread and back (with `then`: the move too)
        return original_submit(self, run, durable, then)

    batching.WriteQueue.submit = submit  # type: ignore[method-assign]

    # --- fsync from Python (the driver) -----------------------------------------------------------------------
    for name in ("fsync", "fdatasync"):
        original = getattr(os, name)

        def synced(fd: int, _original: Callable[[int], None] = original, _name: str = name) -> None:
            COUNTS[f"os.{_name}"] += 1
            _original(fd)

        setattr(os, name, synced)

    # --- process identity (/proc) -----------------------------------------------------------------------------
    original_proc_read = process_identity._read

    def proc_read(path: str) -> str | None:
        COUNTS["proc.read." + ("stat" if path.endswith("/stat") else path.rsplit("/", 1)[-1])] += 1
        return original_proc_read(path)

    process_identity._read = proc_read

    original_readlink = process_identity._pid_namespace

    def pid_namespace() -> str | None:
        COUNTS["proc.readlink.ns_pid"] += 1
        return original_readlink()

    process_identity._pid_namespace = pid_namespace

    for name in ("is_dead", "this_process"):
        original_fn = getattr(process_identity, name)

        def counted(*args: Any, _original: Callable[..., Any] = original_fn, _name: str = name) -> Any:
            COUNTS[f"proc.{_name}"] += 1
            return _original(*args)

        setattr(process_identity, name, counted)
        if getattr(uploads, name, None) is original_fn:
            setattr(uploads, name, counted)

    # --- lease renewal ----------------------------------------------------------------------------------------
    original_renew = uploads.Uploads._renew

    async def renew(self: Any, *args: Any) -> None:
        COUNTS["lease.renewal"] += 1  # one claim renewed by the worker's renewal task
        await original_renew(self, *args)

    uploads.Uploads._renew = renew  # type: ignore[method-assign]

    # --- upload steps that only some requests take (a PUT on another worker than its PATCH re-hashes) ----------
    for name in ("_rehash", "_sync", "_recover", "_place", "_publish"):
        original_step = getattr(uploads.Uploads, name)

        async def step(self: Any, *args: Any, _original: Callable[..., Any] = original_step, _name: str = name) -> Any:
            COUNTS[f"uploads.{_name}"] += 1
            return await _original(self, *args)

        setattr(uploads.Uploads, name, step)

    signal.signal(signal.SIGUSR1, _dump)


install()

if __name__ == "__main__":
    from docker_registry.server.cli import main

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    sys.exit(main(["serve", sys.argv[1]]))
