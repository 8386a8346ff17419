"""Where the time of one `docker-registry garbage-collect` run goes, timed inside the command's own process.

    python3 bench/gc_phases.py CONFIG                   # the timeline on stderr after the command's own output
    python3 bench/gc_phases.py CONFIG --json OUT.json   # also as JSON (events, the process's CPU seconds)
    python3 bench/gc_phases.py CONFIG --no-removals     # blob files left in place (rows still deleted): the floor
                                                        # of everything but the removals; run it on a copy

Every store call of the collector (`Collector._db`) and every batch of blob-file removals is one line: start, end
and duration in seconds since the process's exec (read from /proc, so the interpreter's start counts), with the
batch's size; "imports" is the command's modules loaded, "exit" the moment the command ends (after its database is
closed). Calls that overlap (a batch's files removed while the next batch's rows go) show as overlapping lines: the
critical path is read off the starts and ends, not the sum of the durations. The CPU seconds come last (the
process's and its removal processes'), split into the main thread's (start-up, the event loop), the file removals'
and the rest (the threads that ran the store's queries): on 2 cores, what the critical path cannot hide is shown by
these. Linux only (/proc).

Comparing two trees: run this file with `PYTHONPATH=<other>/src:<other>/core/src` in front to time the other
tree's collector (the printed path says which one ran), each run on its own copy of one store (`bench/gc.py`
builds them), alternating, at the same priority.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from task_stat import tasks


def _seconds_since_exec() -> float:
    """How long ago this process was exec'd: its start in clock ticks since boot (/proc/self/stat) against the
    uptime."""
    with open("/proc/self/stat") as stat:
        start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as uptime:
        up = float(uptime.read().split()[0])
    return up - start_ticks / os.sysconf("SC_CLK_TCK")


START = time.monotonic() - _seconds_since_exec()
Event = tuple[str, float, float, int | None]


def since_start() -> float:
    return time.monotonic() - START


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of the main thread and of file removals: the filesystem driver's removal
    processes (reaped, so counted as this process's children), or an older tree's file-removing threads (a pool
    that lived as long as the process, so still there at the exit). The store's threads (asyncio's pool) have
    ended by then, so their CPU is what the process's own total leaves."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {
        thread.native_id: "main" if thread is threading.main_thread() else "file removals"
        for thread in threading.enumerate()
        if thread is threading.main_thread() or thread.name.startswith("remove")  # an older tree's removing threads
    }
    times = os.times()
    seconds = {"main": 0.0, "file removals": times.children_user + times.children_system}
    for _, tid, fields in tasks([os.getpid()]):
        if (group := groups.get(tid)) is not None:
            seconds[group] += (int(fields[11]) + int(fields[12])) / tick
    return seconds


def timeline(events: Sequence[Event]) -> str:
    """One line per event: start, end, duration, name and size (rows or files), in the order they ended."""
    return "\n".join(
        f"{began:7.3f} {ended:7.3f} {ended - began:7.3f}  {name}{'' if size is None else f' ({size})'}"
        for name, began, ended, size in events
    )


def _size(args: tuple[object, ...]) -> int | None:
    first = args[0] if args else None
    return len(first) if isinstance(first, (list, tuple)) else None


def instrument(events: list[Event], no_removals: bool) -> str:
    """Wrap the collector's store calls and file removals so each appends an event; the collector module's path."""
    from docker_registry.server.gc import collector

    db = collector.Collector._db
    remove = collector.Collector._remove_blob_files

    async def timed_db(self: collector.Collector, query: Callable[..., Any], *args: object) -> Any:
        name = getattr(query, "__name__", None) or getattr(getattr(query, "func", None), "__name__", "?")
        began = since_start()
        result = await db(self, query, *args)
        events.append((name, began, since_start(), _size(args)))
        return result

    async def timed_remove(self: collector.Collector, doomed: Sequence[tuple[str, int]]) -> None:
        began = since_start()
        if not no_removals:
            await remove(self, doomed)
        events.append(("remove files", began, since_start(), len(doomed)))

    def timed_run(run: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def wrapped(self: collector.Collector, options: Any) -> Any:
            began = since_start()
            try:
                return await run(self, options)
            finally:
                events.append(("collection (Collector.run)", began, since_start(), None))

        return wrapped

    collector.Collector._db = timed_db  # type: ignore[method-assign]
    collector.Collector._remove_blob_files = timed_remove  # type: ignore[method-assign]
    collector.Collector.run = timed_run(collector.Collector.run)  # type: ignore[method-assign]
    return str(collector.__file__)


def main() -> NoReturn:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the registry's configuration file")
    parser.add_argument("--json", metavar="OUT", help="also write the events as JSON to OUT")
    parser.add_argument("--no-removals", action="store_true", help="leave the blob files in place")
    args = parser.parse_args()
    from docker_registry.server import cli

    events: list[Event] = []
    source = instrument(events, args.no_removals)
    events.append(("imports", 0.0, since_start(), None))
    exit_now = os._exit

    def report_and_exit(status: int) -> NoReturn:
        """`cli.run` ends a collection's process with os._exit, once its output is flushed and its database
        closed: the last moment to report."""
        events.append(("exit", since_start(), since_start(), None))
        times = os.times()
        cpu = times.user + times.system + times.children_user + times.children_system  # the removal processes too
        threads = thread_cpu()
        threads["store and the rest"] = max(0.0, cpu - sum(threads.values()))
        events.sort(key=lambda event: event[2])
        split = ", ".join(f"{group} {seconds:.2f}" for group, seconds in threads.items())
        own = f"user {times.user:.2f}, system {times.system:.2f}"
        total = f"CPU {cpu:.2f} s ({own}, removal processes {times.children_user + times.children_system:.2f}; {split})"
        print(
            f"{source}\n{timeline(events)}\n{total}",
            file=sys.stderr,
        )
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"collector": source, "cpu": cpu, "threads": threads, "events": events}, out)
        sys.stderr.flush()
        exit_now(status)

    os._exit = report_and_exit
    sys.argv = ["docker-registry", "garbage-collect", args.config, "--json"]
    cli.run()


if __name__ == "__main__":
    main()
