"""Event records from what the registry logic reports, with the request each came from.

The request is found through the context variable `http.context.SERVING` (set by a step every request takes), so
the registry logic passes no HTTP detail down. Changes get their records at once (the store writes them in the
change's transaction). Pulls only note what was served (`PullNote`: three plain values); a task writes the notes
`FLUSH_SECONDS` after the first of them (sooner once `ROW_EVENTS` wait) in one transaction, as outbox rows of
up to `ROW_EVENTS` each, the notes as they are (`Events.pull_row`; the deliverer makes their events), in a
transaction that neither waits for the disk nor empties any worker's caches, so a pull never waits for the database
and costs it a fraction of a row. Those are not durable: a SIGKILL loses at most the last `FLUSH_SECONDS` of a
worker's pull events (a power loss also what the disk had not taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Callable, Sequence

from aiohttp import web

from ..config.notifications import NotificationsConfig
from ..http.context import SERVING, base_url, user
from ..http.requestid import request_id as request_id_of
from ..registry.events import Action, Target
from ..store.facade import AsyncMetadataStore
from ..store.models import EventRecord
from .envelope import NO_CLIENT, Client, Events, PullNote
from .stats import Stats

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
"""How long the first pull note of a batch waits to be written: the most a SIGKILL of a worker can lose (a 1 s
window was measured, 2026-12-06, and gave nothing at a saturated worker's rate: `bench/README.md`, events11)."""
ROW_EVENTS = 1000
"""Pull events in one outbox row (`Events.pull_row`); as many waiting wake the flusher early."""
MAX_KEYS = 4096
"""What requests were made of, remembered (a few targets, clients and connections in practice; a closed
connection's transport stays referenced until then); beyond, starts afresh."""
MAX_COMBINATIONS = 4096
"""(target, client) combinations numbered for `PullNote`s; beyond, after a flush, only those of the notes still
waiting are numbered afresh (`_renumber`)."""
MAX_BUFFERED_PULLS = 50_000
"""Pull notes kept while the database cannot take them; beyond, the oldest are lost (and counted)."""


def _requester() -> tuple[str, Client]:
    """The id and client of the request being served (none: an event not caused by a request)."""
    request = SERVING.get()
    if request is None:
        return "", NO_CLIENT
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return request_id_of(request), _client(request, peer)


def _ip(text: str) -> str:
    """`text` if it is an IP address, else "": as Distribution's `RemoteAddr`, a forwarded header that names no
    address (anything a client sends) is passed over for the next source."""
    text = text.strip()
    if not text:  # no such header, the common case: no exceptions raised and caught for it
        return ""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return ""
    return text


def _client(request: web.Request, peer: object) -> Client:
    """Who made `request`, as Distribution's `RequestRecord` tells: the client's address as its
    `context.RemoteAddr` gives it (forwarded headers first), the host and scheme it asked for."""
    headers = request.headers
    addr = _ip(headers.get("X-Forwarded-For", "").split(",")[0]) or _ip(headers.get("X-Real-Ip", ""))
    if not addr:
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else request.remote or ""
    agent = headers.get("User-Agent", "")
    return Client(addr, request.host, request.method, agent, user(request), base_url(request))


class Recorder:
    """The registry's `EventRecorder` while notifications are configured."""

    def __init__(self, settings: NotificationsConfig, http_port: int, store: AsyncMetadataStore, stats: Stats) -> None:
        self._settings = settings
        self._store = store
        self._stats = stats
        self._source = {"addr": f"{socket.gethostname()}:{http_port}", "instanceID": str(uuid.uuid4())}
        self._wanted: dict[tuple[str, str | None], bool] = {}
        self._pulls_wanted: dict[str | None, bool] = {}
        """`_wants` of pulls by media type: one lookup, no key to build, on every GET."""
        self._pulls: list[PullNote] = []
        self._combinations: list[tuple[Target, Client]] = []
        """Each (target, client) combination pulled, by its number in `PullNote`s."""
        self._combination_numbers: dict[tuple[Target, Client], int] = {}
        self._numbers: dict[tuple[object, ...], int] = {}
        """The combination numbers by what requests are made of (`_number_of`)."""
        self._last: dict[object, tuple[Target, object, str, int]] = {}
        """Per connection, its last pull's target, raw headers, method and number: a client pulling the same thing
        again on its connection (a load, a poller) is recognised by comparing them, without hashing the target (its
        digest's hash is Python code) and the headers as a `_numbers` key needs."""
        self._flusher: asyncio.Task[None] | None = None
        self._pull_events = self._events()
        self._due: asyncio.Future[None] | None = None
        """Resolved when the flusher is due: its timer ran out, or `ROW_EVENTS` wait."""
        self._stopping = False

    def _wants(self, action: str, media_type: str | None) -> bool:
        """True when some endpoint takes events of `action` on `media_type` (cached: a handful of combinations)."""
        key = (action, media_type)
        wanted = self._wanted.get(key)
        if wanted is None:
            wanted = self._wanted[key] = any(not e.ignores(action, media_type) for e in self._settings.enabled)
        return wanted

    def _events(self) -> Events:
        return Events(self._source, self._settings.events.includereferences)

    def _number_of(self, target: Target, request: web.Request) -> int:
        """The number of what `request` pulled and who pulled it, found by what the request is made of: the target,
        the request's raw headers (one tuple, hashed in a fraction of a microsecond; they hold its credentials, so
        they decide its user too), its connection (its peer and scheme) and method: one dictionary lookup, and its
        `Client` made once per such key. (`pulled` first compares with the connection's last pull, see `_last`.)"""
        transport = request.transport
        if transport is None:  # the connection is gone: its peer is no longer known, nothing to remember
            return self._combination_number((target, _client(request, None)))
        raw_headers, method = request.raw_headers, request.method
        key = (target, raw_headers, transport, method)
        number = self._numbers.get(key)
        if number is None:
            if len(self._numbers) >= MAX_KEYS:  # clients that send a header unique to each request, or new connections
                self._numbers.clear()
            peer = transport.get_extra_info("peername")
            number = self._numbers[key] = self._combination_number((target, _client(request, peer)))
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[transport] = (target, raw_headers, method, number)
        return number

    def _combination_number(self, combination: tuple[Target, Client]) -> int:
        number = self._combination_numbers.get(combination)
        if number is None:
            number = self._combination_numbers[combination] = len(self._combinations)
            self._combinations.append(combination)
        return number

    def record(self, action: Action, targets: Sequence[Target]) -> list[EventRecord]:
        wanted = self._wanted_of(action, targets)
        return self._records(action, wanted, *_requester()) if wanted else []

    def later(self, action: Action) -> Callable[[Sequence[Target]], list[EventRecord]]:
        request_id, client = _requester()
        return lambda targets: self._records(action, self._wanted_of(action, targets), request_id, client)

    def _wanted_of(self, action: Action, targets: Sequence[Target]) -> list[Target]:
        return [target for target in targets if self._wants(action, target.media_type)]

    def _records(self, action: Action, wanted: Sequence[Target], request_id: str, client: Client) -> list[EventRecord]:
        now, events = time.time(), self._events()
        return [EventRecord(now, events.event(action, target, request_id, client, now)) for target in wanted]

    def pulled(self, target: Target) -> None:
        """Only a note (`PullNote`: the time, a number for what was pulled by whom, the request id); its event's
        text is made when flushed, its id and timestamp when delivered."""
        request = SERVING.get()
        if request is None:
            return
        method = request.method
        if method == "HEAD":  # as a HEAD serves nothing, it is no pull
            return
        wanted = self._pulls_wanted.get(target.media_type)
        if wanted is None:
            wanted = self._pulls_wanted[target.media_type] = self._wants("pull", target.media_type)
        if not wanted:
            return
        last = self._last.get(request.transport)
        if last is not None and last[1] == request.raw_headers and last[0] == target and last[2] == method:
            number = last[3]  # what this connection's previous pull was: compared, not hashed (see `_last`)
        else:
            number = self._number_of(target, request)
        pulls = self._pulls
        if len(pulls) >= MAX_BUFFERED_PULLS:
            del pulls[0]
            self._stats.pulls_lost += 1
        pulls.append((time.time(), number, request_id_of(request)))
        if len(pulls) == 1 or len(pulls) == ROW_EVENTS:  # the first arms the flusher's timer, the last wakes it
            self._wake()

    # --- the pull flusher ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._flusher = asyncio.ensure_future(self._flush_forever())

    def _wake(self) -> None:
        if self._due is not None and not self._due.done():
            self._due.set_result(None)

    async def stop(self) -> None:
        """Stop flushing, writing what is noted so far (a clean shutdown loses no pull event). The flusher is
        let finish, not cancelled: a write cancelled while its thread runs on may be committed, and the notes it
        held would then be written twice."""
        if self._flusher is not None:
            self._stopping = True
            self._wake()
            with contextlib.suppress(Exception):
                await self._flusher
        with contextlib.suppress(Exception):
            await self.flush()

    async def _flush_forever(self) -> None:
        """Flush `FLUSH_SECONDS` after the first note of a batch, or once `ROW_EVENTS` wait: a bare future that
        `pulled` or a timer resolves (no `wait_for` and its task ten times a second, and no timer at all while
        nothing is pulled)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._due = due = loop.create_future()
            waiting = len(self._pulls)
            timer = loop.call_later(0 if waiting >= ROW_EVENTS else FLUSH_SECONDS, self._wake) if waiting else None
            try:
                await due
            finally:
                if timer is not None:
                    timer.cancel()
            if timer is None and not self._stopping:  # woken by the first note: it waits its turn with the others
                continue
            try:
                await self.flush()
            except Exception as error:  # the database is unavailable: keep the notes for the next round
                log.warning("notifications: pull events not recorded yet: %s", error)

    async def flush(self) -> None:
        if not self._pulls:
            return
        notes, self._pulls = self._pulls, []
        events = self._pull_events  # kept from batch to batch: what repeats is serialized once
        records = []
        for first in range(0, len(notes), ROW_EVENTS):
            row = notes[first : first + ROW_EVENTS]
            records.append(EventRecord(row[0][0], events.pull_row(row, self._combinations.__getitem__), len(row)))
        try:
            await self._store.record_events(records)
        except Exception:  # not written: a cancelled write (BaseException) may have been, so it is not retried
            self._pulls[:0] = notes  # first again, in their order
            lost = len(self._pulls) - MAX_BUFFERED_PULLS
            if lost > 0:
                del self._pulls[:lost]
                self._stats.pulls_lost += lost
                log.error("notifications: %d pull events lost, the database unavailable and the buffer full", lost)
            raise
        finally:
            if len(self._combinations) > MAX_COMBINATIONS:
                self._renumber()

    def _renumber(self) -> None:
        """Number afresh only the combinations that waiting notes hold (many targets or clients: the table would
        otherwise keep every one ever pulled)."""
        combinations = self._combinations
        self._numbers, self._combination_numbers, self._combinations, self._last = {}, {}, [], {}
        self._pull_events.forget_combinations()
        renumbered = []
        for when, number, request_id in self._pulls:
            renumbered.append((when, self._combination_number(combinations[number]), request_id))
        self._pulls = renumbered
