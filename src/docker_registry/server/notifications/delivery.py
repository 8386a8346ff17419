"""Delivery: one process of the registry sends every endpoint its events, in order, each once.

Every worker asks for the lease row `delivery` every `LEASE_SECONDS / 3`; the one holding it delivers, and it keeps
it by renewing. A holder that stops renewing (a stopped node) is replaced once the lease expires; one that died on
this host (SIGKILL, OOM killer) at once, since the lease names its process (`process_identity`). On a clean stop
the holder gives the lease up.

Per endpoint, events are read from the outbox after the endpoint's cursor, in id order (a row is one event, or a
worker's batch of pull events, see `envelope.expand`: the cursor counts the events of a row already given). They
are POSTed in Distribution's envelope, one each as Distribution does (or up to the endpoint's `batch`), and retried
until the endpoint takes them (2xx or 3xx): at once while failures in a row stay below `threshold`, then every
`backoff`. Only then does the cursor move past them, so a crash between the answer and the cursor's write sends
those events again: exactly once in normal operation, at least once across crashes. An endpoint that refuses an
envelope of several events as too large (413) gets the first half of them at once, and envelopes no larger from
then on: a receiver's body limit would otherwise hold its events back until `maxage` dropped them.
Events the endpoint ignores are skipped, and events older than `maxage` are dropped with a log line. Endpoints do
not wait for one another. Events every endpoint has been given are pruned from the outbox.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from http import HTTPStatus
from typing import Any

import aiohttp
from yarl import URL

from ..config.notifications import EndpointSection, NotificationsConfig
from ..http.outgoing import client_error_text, request_url
from ..registry.process_identity import is_dead, this_process
from ..store.metadata import MetadataStore
from ..store.models import Cursor, StoredEvent
from .envelope import MEDIA_TYPE, envelope, row_events
from .stats import EndpointStats, Stats

log = logging.getLogger(__name__)

LEASE = "delivery"
LEASE_SECONDS = 15.0
POLL_SECONDS = 0.25
"""How often an endpoint that is up to date looks for new events (one indexed query)."""
BATCH = 100
"""Events read at a time, and the most sent in one envelope."""
SHORT_PAUSE = 0.05
"""The pause between retries while failures in a row are below the threshold."""
PRUNE_SECONDS = 30.0
ERROR_PAUSE = 5.0
RECOUNT_EVERY = 10
"""Retries between two counts of the events waiting behind an endpoint that is down (a count reads the backlog)."""
CURSOR_SECONDS = 1.0
"""While events flow, an endpoint's cursor is stored at most this often (and always once it is up to date or
delivery stops): a write per envelope would cost a transaction per envelope. A crash may thus send up to this much
of an endpoint's events again."""


class Batch:
    """The events of rows read after a cursor (`start.position`) that the cursor has not given yet, in order,
    numbered from 0: nothing is made per event until it is sent (a backlog of batched pulls is 100,000 events,
    see `PullRowEvents`); an event's row and its place in the cursor are worked out from its index when needed."""

    def __init__(self, rows: list[StoredEvent], start: Cursor) -> None:
        self.rows = rows
        self._events = [row_events(row.payload) for row in rows]
        # `given` counts events of the row just after `position`: one pruned meanwhile (every endpoint then enabled
        # had taken it, while this one was disabled or removed) leaves nothing of the next row given
        self._skipped = start.given if rows and rows[0].id == start.position + 1 else 0
        """Events of the first row given before `start`."""
        self._ends: list[int] = []
        """Per row, the index past its last event."""
        end = -self._skipped
        for events in self._events:
            end += len(events)
            self._ends.append(end)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[str]:
        for number, events in enumerate(self._events):
            yield from events[self._skipped if number == 0 else 0 :]

    def texts(self, indexes: Sequence[int]) -> list[str]:
        """The events at `indexes`, made now; a range (no events left out) a row's slice at a time."""
        if not isinstance(indexes, range) or indexes.step != 1:
            return [self._text(index) for index in indexes]
        texts: list[str] = []
        index, stop = indexes.start, indexes.stop
        while index < stop:
            number = self.row_of(index)
            local = self._local(number, index)
            end = min(stop, self._ends[number])
            texts += self._events[number][local : local + end - index]
            index = end
        return texts

    def _text(self, index: int) -> str:
        number = self.row_of(index)
        return self._events[number][self._local(number, index)]

    def _local(self, number: int, index: int) -> int:
        """The place in its row of the event at `index`, in row `number`."""
        return index - (self._ends[number - 1] if number else -self._skipped)

    def row_of(self, index: int) -> int:
        """The number (in `rows`) of the row holding the event at `index`."""
        return bisect.bisect_right(self._ends, index)

    def created_at(self, index: int) -> float:
        return self.rows[self.row_of(index)].created_at

    def after(self, index: int) -> Cursor:
        """Where the cursor stands once the event at `index` (and every one before) was given."""
        number = self.row_of(index)
        row = self.rows[number]
        if index + 1 == self._ends[number]:
            return Cursor(row.id)
        # within a row the cursor names the row before it: ids are committed in order, none appears between
        return Cursor(row.id - 1, self._local(number, index) + 1)


def _post_options(endpoint: EndpointSection) -> tuple[URL, list[tuple[str, str]], aiohttp.ClientTimeout]:
    headers = [(name, value) for name, values in endpoint.headers.items() for value in values]
    headers.append(("Content-Type", MEDIA_TYPE))
    return request_url(endpoint.url, endpoint.headers), headers, aiohttp.ClientTimeout(total=endpoint.timeout)


class LostLease(Exception):
    """Another process delivers now: this one stops."""


DRAINED_BODY_MAX = 64 * 1024
"""Most of a receiver's answer read: enough for its connection to be used again; the rest is not waited for."""


async def _drain(answer: aiohttp.ClientResponse) -> None:
    """Read what the receiver says after its status line, which decides alone (as Distribution's): a body cut
    short, sent past the timeout, or endless no longer makes a delivered envelope a failure, sent again and again
    until `maxage`. A body read to its end lets the connection serve the next POST."""
    left = DRAINED_BODY_MAX
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        while left > 0 and (piece := await answer.content.read(left)):
            left -= len(piece)


class Deliverer:
    def __init__(self, settings: NotificationsConfig, store: MetadataStore, stats: Stats) -> None:
        self._settings = settings
        self._store = store
        self._stats = stats
        self._holder = uuid.uuid4().hex
        self._lease_until = 0.0
        self._cursors: dict[str, Cursor] = {}
        """Each endpoint's cursor as stored."""
        self._positions: dict[str, Cursor] = {}
        """Each endpoint's last event delivered (or skipped): the cursor follows within `CURSOR_SECONDS`."""
        self._saved_at: dict[str, float] = {}
        self._pruned_at = time.monotonic()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._posting: set[str] = set()
        """The endpoints with a POST under way: a clean stop lets it finish (see `stop`)."""
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        self._posts: dict[str, tuple[URL, list[tuple[str, str]], aiohttp.ClientTimeout]] = {}
        """Per endpoint, what every POST to it sends alike: its URL, headers and timeout, made once."""
        self._largest: dict[str, int] = {}
        """Per endpoint, the most events sent in one envelope: its `batch`, or less once it refused one as too
        large (for this process's life: a receiver's body limit is its configuration, not a passing state)."""
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.ensure_future(self._hold_lease())

    async def stop(self) -> None:
        """A clean stop (SIGTERM): an envelope under way is let finish, within its endpoint's timeout, and counted
        as delivered if it was taken; cut off, it was taken by the receiver and sent again after the restart."""
        self._stopping = True
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        delivering = self._stats.delivering
        await self._stop_endpoints(finish_posts=True)
        if delivering:  # the next process need not wait for the lease to expire
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.release_lease, LEASE, self._holder)

    # --- the lease ----------------------------------------------------------------------------------------------
    def _holds_lease(self) -> bool:
        return time.time() < self._lease_until

    async def _hold_lease(self) -> None:
        while True:
            try:
                await self._lease_round()
            except Exception as error:  # the database is unavailable: deliveries wait for it
                log.warning("notifications: cannot take or renew the delivery lease: %s", error)
            await asyncio.sleep(LEASE_SECONDS / 3)

    async def _lease_round(self) -> None:
        lease = await asyncio.to_thread(
            self._store.take_lease, LEASE, self._holder, this_process(), LEASE_SECONDS, is_dead
        )
        if not lease.held:
            if self._stats.delivering:
                log.info("notifications: another process delivers events now")
                await self._stop_endpoints()
            return
        self._lease_until = lease.expires_at - 1.0  # a margin for the time the renewal took
        if not self._stats.delivering:
            log.info("notifications: this process delivers events")
            await self._start_endpoints()
        elif any(task.done() for task in self._tasks.values()):  # one found the lease lost meanwhile
            await self._stop_endpoints()
            await self._start_endpoints()
        elif time.monotonic() - self._pruned_at > PRUNE_SECONDS:
            self._pruned_at = time.monotonic()
            await self._prune()

    async def _start_endpoints(self) -> None:
        endpoints = self._settings.enabled
        self._cursors = await asyncio.to_thread(self._store.event_cursors, [e.name for e in endpoints])
        self._positions = dict(self._cursors)
        # no cookie jar: Distribution keeps no cookies from receivers, and a jar is work on every POST
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._posts = {endpoint.name: _post_options(endpoint) for endpoint in endpoints}
        for endpoint in endpoints:
            self._largest.setdefault(endpoint.name, endpoint.batch)
        self._stats.delivering = True  # only now: a failure above leaves the next round to start again
        for endpoint in endpoints:
            self._tasks[endpoint.name] = asyncio.ensure_future(self._serve(endpoint))

    async def _stop_endpoints(self, finish_posts: bool = False) -> None:
        self._stats.delivering = False
        for stats in self._stats.endpoints.values():  # the next holder knows; a figure kept here would be stale
            stats.pending = 0
        serving, self._tasks = self._tasks, {}
        posting = [serving[name] for name in self._posting if name in serving]
        if finish_posts and posting:  # each returns once its POST is answered (`_stopping`)
            longest = max(endpoint.timeout for endpoint in self._settings.enabled)
            await asyncio.wait(posting, timeout=longest + 1.0)
        tasks = list(serving.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in list(self._positions):  # what was delivered since the last cursor write
            with contextlib.suppress(Exception):
                await self._save_cursor(name, force=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _prune(self) -> None:
        if not self._cursors:
            return
        try:
            removed = await asyncio.to_thread(self._store.prune_events, min(c.position for c in self._cursors.values()))
        except Exception as error:
            log.warning("notifications: cannot prune delivered events: %s", error)
            return
        if removed:
            log.debug("notifications: pruned %d delivered events", removed)

    # --- one endpoint -------------------------------------------------------------------------------------------
    async def _serve(self, endpoint: EndpointSection) -> None:
        while not self._stopping:
            try:
                await self._deliver_pending(endpoint)
            except LostLease:
                if self._stopping:
                    return
                log.info("notifications: %s: the delivery lease moved on; stopping here", endpoint.name)
                self._lease_until = 0.0
                return
            except Exception as error:  # the database is unavailable: try again in a while, without flooding the log
                log.warning("notifications: %s: delivery paused: %s", endpoint.name, error)
                await asyncio.sleep(ERROR_PAUSE)
            if self._stopping:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _deliver_pending(self, endpoint: EndpointSection) -> None:
        """Send the endpoint everything after its position, a batch at a time."""
        stats = self._stats.endpoints[endpoint.name]
        while True:
            position = self._positions[endpoint.name]
            rows, beyond = await asyncio.to_thread(self._read, position.position)
            if not rows:
                stats.pending = 0
                await self._save_cursor(endpoint.name, force=True)
                return
            batch = Batch(rows, position)
            stats.pending = len(batch) + beyond
            if not self._holds_lease():
                raise LostLease()
            oldest = min(row.created_at for row in rows)
            wanted: Sequence[int] = range(len(batch))  # indexes in `batch`
            if endpoint.filters or self._too_old(oldest):  # some events must be read: which rules, which too old
                wanted = self._wanted(endpoint, batch)
            start = 0  # an index, not a shorter list each time
            while start < len(wanted):
                chosen = wanted[start : start + self._largest[endpoint.name]]
                recount = functools.partial(self._recount, stats, rows[-1].id, len(wanted) - start)
                sent = await self._send(endpoint, batch.texts(chosen), batch.created_at(chosen[0]), recount)
                if sent:
                    stats.delivered += sent
                    start += sent
                    self._positions[endpoint.name] = batch.after(chosen[sent - 1])
                    stats.pending = len(wanted) - start + beyond
                    await self._save_cursor(endpoint.name)
                    if self._stopping:
                        return
                    continue
                # the oldest of them grew older than `maxage` while it was retried: drop every such one
                kept = []
                for index in wanted[start:]:
                    if self._too_old(batch.created_at(index)):
                        self._drop(endpoint, json.loads(batch.texts([index])[0]))
                    else:
                        kept.append(index)
                wanted, start = kept, 0
            self._positions[endpoint.name] = Cursor(rows[-1].id)  # past what was ignored or dropped too
            stats.pending = beyond

    async def _recount(self, stats: EndpointStats, after: int, in_batch: int) -> None:
        """While an envelope is retried, events go on arriving behind it: the queue depth follows them (it stayed
        at what the batch held when it was read, through an outage of hours)."""
        stats.pending = in_batch + await asyncio.to_thread(self._store.events_after_count, after)

    def _read(self, position: int) -> tuple[list[StoredEvent], int]:
        """Up to `BATCH` rows after `position`, and how many events the rows beyond them hold (one trip to a
        thread for both)."""
        rows = self._store.events_after(position, BATCH)
        return rows, self._store.events_after_count(rows[-1].id) if rows else 0

    def _wanted(self, endpoint: EndpointSection, batch: Batch) -> list[int]:
        """The indexes of the events of `batch` for `endpoint`: not ignored by its rules, not too old (those are
        dropped here)."""
        wanted = []
        for index, text in enumerate(batch):
            payload = json.loads(text)
            target = payload.get("target", {})
            if endpoint.ignores(payload.get("action", ""), target.get("mediaType")):
                continue
            if self._too_old(batch.created_at(index)):
                self._drop(endpoint, payload)
                continue
            wanted.append(index)
        return wanted

    async def _save_cursor(self, name: str, force: bool = False) -> None:
        """Store the endpoint's position as its cursor: when forced, else at most every `CURSOR_SECONDS`."""
        position = self._positions[name]
        if position == self._cursors[name]:
            return
        if not force and time.monotonic() - self._saved_at.get(name, 0.0) < CURSOR_SECONDS:
            return
        if not await asyncio.to_thread(self._store.advance_cursor, name, self._cursors[name], position):
            raise LostLease()
        self._cursors[name] = position
        self._saved_at[name] = time.monotonic()

    def _smaller(self, endpoint: EndpointSection, refused: int) -> int:
        """Half of `refused` events, which the endpoint refused as too large, as its largest envelope from now on."""
        self._largest[endpoint.name] = min(self._largest[endpoint.name], refused // 2)
        log.warning(
            "notifications: %s: an envelope of %d events was refused as too large (413); sending at most %d at a "
            "time from now on",
            endpoint.name,
            refused,
            self._largest[endpoint.name],
        )
        return self._largest[endpoint.name]

    def _too_old(self, created_at: float) -> bool:
        return created_at < time.time() - self._settings.events.maxage

    def _drop(self, endpoint: EndpointSection, payload: dict[str, Any]) -> None:
        log.warning(
            "notifications: %s: dropped event %s (%s %s), older than notifications.events.maxage",
            endpoint.name,
            payload.get("id"),
            payload.get("action"),
            payload.get("target", {}).get("repository"),
        )
        self._stats.endpoints[endpoint.name].dropped += 1

    async def _send(
        self, endpoint: EndpointSection, events: list[str], oldest: float, recount: Callable[[], Awaitable[None]]
    ) -> int:
        """POST `events` in one envelope until the endpoint takes them, and return how many it took (all of them, or
        the first ones only once it refused the envelope as too large); 0 once the oldest of them is older than
        `maxage`: the caller drops what is too old and sends the rest."""
        assert self._session is not None
        stats = self._stats.endpoints[endpoint.name]
        body = envelope(events)
        url, headers, timeout = self._posts[endpoint.name]
        failures = 0
        while not self._too_old(oldest):
            if self._stopping:
                raise LostLease()  # no new attempt once stopping
            self._posting.add(endpoint.name)
            try:
                async with self._session.post(url, data=body, headers=headers, timeout=timeout) as answer:
                    await _drain(answer)
                    if 200 <= answer.status < 400:
                        return len(events)
                    problem = f"answered {answer.status}"
                    if answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE and len(events) > 1:
                        events = events[: self._smaller(endpoint, len(events))]
                        body = envelope(events)
                        stats.failures += 1
                        continue
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = client_error_text(error)
            finally:
                self._posting.discard(endpoint.name)
            failures += 1
            stats.failures += 1
            if failures == endpoint.threshold:
                log.warning(
                    "notifications: %s: %d failures in a row (%s); retrying every %ss",
                    endpoint.name,
                    failures,
                    problem,
                    endpoint.backoff,
                )
            await asyncio.sleep(endpoint.backoff if failures >= endpoint.threshold else SHORT_PAUSE)
            if not self._holds_lease():
                raise LostLease()
            if failures >= endpoint.threshold and (failures - endpoint.threshold) % RECOUNT_EVERY == 0:
                with contextlib.suppress(Exception):  # down for a while: its queue grows
                    await recount()
        return 0
