"""A webhook receiver for notification tests: a real aiohttp server on loopback, in a thread of the test process,
keeping every envelope it was sent (or refusing them all with a status of the test's choosing)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from registry_process import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    """What every POST is answered with; anything but 2xx is a failed delivery for the registry."""
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    limit: int | None = None
    """The most deliveries it takes; past them it answers 503, as if it had gone down."""
    largest: int | None = None
    """The most events it takes in one envelope; a larger one is answered 413, as a body limit would."""
    refused: list[int] = field(default_factory=list)
    """The number of events of each envelope answered 413."""
    answer: str = "whole"
    """How a 200 is sent: "whole"; "cut" (a body shorter than its Content-Length, then the connection closed);
    "late" (the status line at once, the body `late_by` seconds after)."""
    late_by: float = 0.0
    location: str | None = None
    """With a 3xx `status`, the `Location` it answers (the receiver's own URL: a redirect loop)."""
    hold: float = 0.0
    """Seconds each POST waits, taken (counted in `deliveries`), before it is answered."""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for delivery in self.deliveries for event in delivery.body["events"]]

    async def _receive(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        with self._lock:
            self.attempts += 1
            status = 503 if self.limit is not None and len(self.deliveries) >= self.limit else self.status
            if self.largest is not None and len(body["events"]) > self.largest:
                status = 413
                self.refused.append(len(body["events"]))
            if status < 300:
                self.deliveries.append(Delivery(dict(request.headers), body))
        await asyncio.sleep(self.hold)
        if status >= 300 or self.answer == "whole":
            headers = {"Location": self.location} if self.location and 300 <= status < 400 else None
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status)
        response.content_length = 20
        await response.prepare(request)
        if self.answer == "cut":
            await response.write(b"ok")
            assert request.transport is not None
            request.transport.close()
        else:
            await asyncio.sleep(self.late_by)
            await response.write(b"o" * 20)
        return response

    def start(self) -> Receiver:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/events", self._receive)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0) -> list[dict[str, Any]]:
        """The events received once `done(events)` holds; fails with what came if it does not within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events
            if done(events):
                return events
            time.sleep(0.05)
        raise AssertionError(f"events not received in {timeout}s; got {json.dumps(self.events, indent=1)[:4000]}")

    def endpoint(self, name: str = "test", **settings: Any) -> dict[str, Any]:
        """A `notifications.endpoints` entry for this receiver."""
        return {"name": name, "url": self.url, "timeout": "2s", "threshold": 3, "backoff": "200ms", **settings}
