"""The event format of CNCF Distribution (`notifications/event.go`), field for field, so receivers written for it
work unchanged: an envelope `{"events": [...]}` of media type `application/vnd.docker.distribution.events.v1+json`.

Go's `omitempty` decides which fields appear: empty strings and zero sizes are left out, except the request's
`id`, `method` and `useragent`, and the structs `target`, `request`, `actor` and `source`, which are always there.
"""

from __future__ import annotations

import binascii
import json
import os
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple, overload

from ..registry.events import Target
from ..store.models import Descriptor

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
CACHED_PARTS = 4096
"""(action, target, client) combinations whose text an `Events` keeps."""


class Client(NamedTuple):
    """Who made the request that caused an event (Distribution's `RequestRecord` but its id, and `ActorRecord`):
    the same for every request of a client, so a recorder keeps one per client and a batch renders it once."""

    addr: str
    host: str
    method: str
    useragent: str
    actor: str | None
    base_url: str
    """`scheme://host` the client used, for the target's URL."""


NO_CLIENT = Client("", "", "", "", None, "")
"""For an event not caused by a request (none is today): still a well-formed event."""

PullNote = tuple[float, int, str]
"""What a pull leaves at request time: when (`time.time()`), the number its recorder gave the (target, client)
combination, and the request's id. Only a float, an int and a string: the garbage collector stops tracking such a
tuple at its first look, so the notes of a batch (alive up to 100 ms, thousands of them) are not promoted into the
older generations and do not bring on full collections."""


class Ids:
    """Unique ids in a UUID's shape, cheaply: a random prefix per process and a counter (a pull event needs two
    ids, and `uuid4()` costs several microseconds each; receivers take ids as opaque strings). A forked worker
    draws its own prefix: it would otherwise count on from its parent's, as its siblings do. Ids are taken on the
    event loop's thread and in the database writer's (a blob's events, made with its link): under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        prefix = uuid.uuid4().hex
        self.prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self._next = 0

    def next(self) -> str:
        return f"{self.prefix}{self.take(1):012x}"

    def take(self, count: int) -> int:
        """The first of `count` counter values reserved at once: the ids `prefix` + each value as 12 hex digits
        (a batch of pull events stores the prefix and the first value, each event's id is made when delivered)."""
        with self._lock:
            first = self._next
            self._next += count
        return first


ids = Ids()
os.register_at_fork(after_in_child=ids.reset)


def timestamp(when: float) -> str:
    """RFC 3339 with nanosecond precision, as Go's `time.Time` marshals (here in UTC); the part up to the second
    is formatted once a second."""
    return _timestamp(int(when * 1_000_000))


def _timestamp(micros: int) -> str:
    """`timestamp` of a time in microseconds since the epoch."""
    whole, fraction = divmod(micros, _MILLION)
    return f"{_SECONDS[whole]}{fraction:06d}000Z"


class _Seconds(dict[int, str]):
    """RFC 3339 text of whole seconds since the epoch, up to the fraction's dot: each second formatted once (the
    events of a batch fall in a few seconds); a few hundred are kept. Read from the event loop's thread and the
    database writer's (a blob's events): a lost entry is only formatted again."""

    def __missing__(self, whole: int) -> str:
        if len(self) >= 256:
            self.clear()
        text = self[whole] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        return text


_SECONDS = _Seconds()
_MICROS = 1_000_000.0
_MILLION = 1_000_000


def _descriptor(descriptor: Descriptor) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": descriptor.media_type, "digest": str(descriptor.digest)}
    if descriptor.size:
        d["size"] = descriptor.size
    if descriptor.urls:
        d["urls"] = list(descriptor.urls)
    return d


def _target(target: Target, base_url: str, include_references: bool) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if target.media_type:
        t["mediaType"] = target.media_type
    if target.size:
        t["size"] = target.size
    if target.digest is not None:
        t["digest"] = str(target.digest)
    if target.size:
        t["length"] = target.size
    t["repository"] = target.repository
    if target.from_repository:
        t["fromRepository"] = target.from_repository
    if target.media_type and target.digest is not None:  # Distribution builds a URL for pushed and pulled content
        resource = "manifests" if target.kind == "manifest" else "blobs"
        t["url"] = f"{base_url}/v2/{target.repository}/{resource}/{target.digest}"
    if target.tag:
        t["tag"] = target.tag
    if include_references and target.references:
        t["references"] = [_descriptor(d) for d in target.references]
    return t


class Events:
    """Builds events as JSON text, ready to be stored and later put in an envelope unchanged.

    What repeats from one event to the next is serialized once per `Events`: pull events mostly repeat a few
    targets (most of an event's text) and a few clients (a request's fields but its id), and the source never
    changes. Ids, request ids and timestamps need no escaping; everything else goes through `json.dumps`."""

    def __init__(self, source: dict[str, str], include_references: bool) -> None:
        self._source = _dumps(source)
        self._include_references = include_references
        self._cache: dict[tuple[str, Target, Client], tuple[str, str]] = {}
        self._shared: dict[int, str] = {}
        """The texts a pull row's events share (`parts`) as JSON, by the number of their (target, client)
        combination (`PullNote`): each serialized once, however many rows and which others they come with (the
        recorder numbers afresh beyond `recorder.MAX_COMBINATIONS`, and this goes with the old numbers)."""

    def event(self, action: str, target: Target, request_id: str, client: Client, when: float) -> str:
        """One event as JSON text. `request_id` goes in unescaped: `http.requestid` only keeps or makes ids of
        characters JSON never escapes."""
        # a pushed manifest (its references are a list) is not repeated, nor hashable
        parts = self._parts(action, target, client) if target.references else self.parts(action, target, client)
        return f'{{"id":"{ids.next()}","timestamp":"{timestamp(when)}{parts[0]}{request_id}{parts[1]}'

    def pull_row(self, notes: Sequence[PullNote], combination: Callable[[int], tuple[Target, Client]]) -> str:
        """A batch of pull notes as one outbox row, as they are (`PULL_ROW`): a header of the id prefix, the first
        id's counter (`Ids.take`) and the JSON object of the texts the events share (a few targets and clients) by
        their numbers, tab-separated; then one line each for the notes' times (float64, little-endian, base64),
        numbers (comma-separated) and request ids (tab-separated; none holds a tab). Each column is made by one C
        call over the batch, nothing in Python per note: a worker's flush costs its requests next to nothing, and
        the deliverer (`RawPullRowEvents`) makes each event's id, timestamp and JSON when it sends it. `combination`
        gives the (target, client) a note's number stands for (`PullNote`)."""
        times, numbers, request_ids = zip(*notes, strict=True)
        shared, texts = self._shared, []
        for number in dict.fromkeys(numbers):  # each number once, in order
            text = shared.get(number)
            if text is None:
                text = shared[number] = _dumps(self.parts("pull", *combination(number)))
            texts.append(f'"{number}":{text}')
        header = f"{PULL_ROW}{ids.prefix}\t{ids.take(len(notes))}\t{{{','.join(texts)}}}"
        return "\n".join((header, _pack_times(times), ",".join(map(str, numbers)), "\t".join(request_ids)))

    def forget_combinations(self) -> None:
        """The numbers of `PullNote`s start afresh: texts kept by number go."""
        self._shared.clear()

    def parts(self, action: str, target: Target, client: Client) -> tuple[str, str]:
        """The event's text between its timestamp and its request's id, and after the request's id (cached)."""
        key = (action, target, client)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= CACHED_PARTS:  # many targets or clients: start afresh
                self._cache.clear()
            cached = self._cache[key] = self._parts(action, target, client)
        return cached

    def _parts(self, action: str, target: Target, client: Client) -> tuple[str, str]:
        """The event's text between the timestamp and the request's id, and after the request's id."""
        target_json = _dumps(_target(target, client.base_url, self._include_references))
        return f'","action":"{action}","target":{target_json},"request":{{"id":"', f'"{self._request_rest(client)}'

    def _request_rest(self, client: Client) -> str:
        """The event's text after the request's id: the request's other fields, the actor and the source."""
        req: dict[str, str] = {}
        if client.addr:
            req["addr"] = client.addr
        if client.host:
            req["host"] = client.host
        req["method"] = client.method
        req["useragent"] = client.useragent
        fields = _dumps(req)[1:-1]
        actor = _dumps({"name": client.actor}) if client.actor else "{}"
        return f',{fields}}},"actor":{actor},"source":{self._source}}}'


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


OLD_PULL_ROW = "P"
"""The first character of an outbox row of pull events as written before `LINED_PULL_ROW` (each line with its
event's id and timestamp); still expanded, as such rows may wait in an outbox when the registry is upgraded."""
LINED_PULL_ROW = "Q"
"""The first character of an outbox row of pull events as written before `PULL_ROW` (a line per event, made by the
worker); still expanded, for the same reason (`PullRowEvents`)."""
PULL_ROW = "R"
"""The first character of an outbox row made by `Events.pull_row` (a row of JSON events starts with `{`)."""


def _pack_times(times: Sequence[float]) -> str:
    packed = array("d", times)
    if sys.byteorder != "little":  # rows are read on any node of the registry
        packed.byteswap()
    return binascii.b2a_base64(packed.tobytes(), newline=False).decode()


def _unpack_times(text: str) -> array[float]:
    times = array("d", binascii.a2b_base64(text))
    if sys.byteorder != "little":
        times.byteswap()
    return times


def expand(payload: str) -> list[str]:
    """The events of an outbox row as JSON texts: its lines, or those `Events.pull_row` packed."""
    return list(row_events(payload)[:])


def row_events(payload: str) -> Sequence[str]:
    """The events of an outbox row as a sequence of JSON texts; those of a `PULL_ROW` are made as they are read
    (`PullRowEvents`)."""
    lines = payload.split("\n")
    if payload.startswith(PULL_ROW):
        return RawPullRowEvents(lines)
    if payload.startswith(LINED_PULL_ROW):
        return PullRowEvents(lines)
    if payload.startswith(OLD_PULL_ROW):
        shared = json.loads(lines[0][len(OLD_PULL_ROW) :])
        events = []
        for line in lines[1:]:
            event_id, when_text, which, request_id = line.split("\t")
            text = int(which) * 2
            events.append(f'{{"id":"{event_id}","timestamp":"{when_text}{shared[text]}{request_id}{shared[text + 1]}')
        return events
    return lines


class _FilledEvents(Sequence[str]):
    """The events of a row of pull events, each a template filled when read (its id, timestamp, shared texts and
    request id; the events of a batch fall in a few seconds, whose text is formatted once each): the
    deliverer makes only the events of the envelope it sends, not the JSON of every row it read (a backlog of 100
    rows is 100,000 events, some 60 MB of text that would also push the workers' data out of the processor's
    caches)."""

    _count: int

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return iter(self[:])

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return self._fill(*index.indices(len(self)))
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self._fill(index, index + 1, 1)[0]

    def _fill(self, start: int, stop: int, step: int) -> list[str]:
        raise NotImplementedError


class RawPullRowEvents(_FilledEvents):
    """The events of a `PULL_ROW`: its columns split once, the events of a slice made a column at a time, each step
    one C call over the slice (`map` of a builtin), no Python code per event but a new second's text: a Python loop
    making each event's text took about a third of the deliverer's CPU per event (`bench/README.md`, events12)."""

    def __init__(self, lines: list[str]) -> None:
        header, times, numbers, request_ids = lines
        prefix, first_id, shared_json = header[len(PULL_ROW) :].split("\t")
        texts: dict[str, list[str]] = json.loads(shared_json)
        self._heads = {number: f"000Z{head}" for number, (head, _) in texts.items()}
        """By combination, what follows the timestamp's microseconds: the end of the timestamp, then the text up to
        the request's id."""
        self._tails = {number: tail for number, (_, tail) in texts.items()}
        self._start = f'{{"id":"{prefix}'
        self._first = int(first_id)
        self._times = _unpack_times(times)
        self._numbers = numbers.split(",")
        self._request_ids = request_ids.split("\t")
        self._count = len(self._request_ids)
        if not len(self._times) == len(self._numbers) == self._count:  # `_fill`'s `zip` would cut the events short
            raise ValueError(
                f"a row of pull events with columns of {len(self._times)}, {len(self._numbers)} and "
                f"{self._count} values"
            )

    def _fill(self, start: int, stop: int, step: int) -> list[str]:
        ids = range(self._first + start, self._first + stop, step)
        if not ids:
            return []
        window = slice(start, stop if stop >= 0 else None, step)  # `slice.indices` gives -1 for before the first
        numbers = self._numbers[window]
        micros = list(map(int, map(_MICROS.__mul__, self._times[window])))
        columns = zip(
            repeat(self._start),
            ids,
            map(_SECONDS.__getitem__, map(_MILLION.__rfloordiv__, micros)),
            map(_MILLION.__rmod__, micros),
            map(self._heads.__getitem__, numbers),
            self._request_ids[window],
            map(self._tails.__getitem__, numbers),
        )
        return list(map(_EVENT.__mod__, columns))


_EVENT = '%s%012x","timestamp":"%s%06d%s%s%s'
"""An event from its columns (`RawPullRowEvents._fill`): the start of its text and of its id, its id's counter, its
timestamp (the second, then the microseconds) and texts, its request's id, its last texts."""


class PullRowEvents(_FilledEvents):
    """The events of a `LINED_PULL_ROW`: a header line, then a line per event."""

    def __init__(self, lines: list[str]) -> None:
        prefix, first_id, start_text, shared_json = lines[0][len(LINED_PULL_ROW) :].split("\t")
        shared: list[str] = json.loads(shared_json)
        self._texts = {str(number): (shared[number * 2], shared[number * 2 + 1]) for number in range(len(shared) // 2)}
        self._prefix, self._first, self._start = prefix, int(first_id), int(start_text)
        self._lines = lines
        """The row's lines, its header first: event `i` is line `i + 1`."""
        self._count = len(lines) - 1

    def _fill(self, start: int, stop: int, step: int) -> list[str]:
        prefix, texts, first, begin = self._prefix, self._texts, self._first, self._start
        events: list[str] = []
        append = events.append
        for number in range(start, stop, step):
            after, which, request_id = self._lines[number + 1].split("\t")
            head, tail = texts[which]
            event_id = f"{prefix}{first + number:012x}"
            append(f'{{"id":"{event_id}","timestamp":"{_timestamp(begin + int(after))}{head}{request_id}{tail}')
        return events


def envelope(payloads: Sequence[str]) -> bytes:
    """The body of one delivery: stored events are JSON already and go in as they are."""
    return ('{"events":[' + ",".join(payloads) + "]}").encode()
