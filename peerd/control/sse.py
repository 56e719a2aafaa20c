"""
``GET /api/v1/events``: the :class:`~peerd.control.events.EventLog` as a
Server-Sent Events stream.

A client resumes with the ``Last-Event-ID`` header (browsers send it when
they reconnect) or the ``last_event_id`` query parameter; a client that
missed events first gets a ``stream.gap`` event and should refresh its
picture. ``types=peer,download`` keeps only events whose type starts with
one of those words. A comment line every ``heartbeat`` seconds keeps the
connection open through proxies and shows a dead client quickly.

Each client has a bounded queue: while its socket is full (the HTTP channel
pauses us as a producer) events wait there; a client that falls
``max_queued`` events behind is disconnected and resumes from its last id.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from peerd.control.events import Event, EventLog

HEARTBEAT = 15.0
MAX_QUEUED = 1000
RETRY_MS = 2000

log = Logger()


def _wanted(types: list[str]) -> Any:
    prefixes = [t.strip().rstrip(".") for t in types if t.strip()]
    if not prefixes:
        return lambda event_type: True
    return lambda event_type: any(
        event_type == p or event_type.startswith(p + ".") for p in prefixes
    )


@implementer(IPushProducer)
class _Subscriber:
    """One connected client: writes events, queues them while paused."""

    def __init__(
        self, request: Any, events: EventLog, clock: Any, wanted: Any, max_queued: int
    ) -> None:
        self._request = request
        self._events = events
        self._clock = clock
        self._wanted = wanted
        self._max_queued = max_queued
        self._queue: deque[bytes] = deque()
        self._paused = False
        self._closed = False
        self._heartbeat: Any = None

    def start(self, backlog: list[Event], heartbeat: float) -> None:
        self._request.registerProducer(self, True)
        self._events.subscribe(self.event)
        self._request.notifyFinish().addBoth(self._finished)
        self._write(f"retry: {RETRY_MS}\n\n".encode())
        for event in backlog:
            self.event(event)
        self._heartbeat_every = heartbeat
        self._heartbeat = self._clock.callLater(heartbeat, self._beat)

    def event(self, event: Event) -> None:
        if self._wanted(event.type) or event.type == "stream.gap":
            self._write(event.to_sse())

    def _write(self, data: bytes) -> None:
        if self._closed:
            return
        if self._paused or self._queue:
            self._queue.append(data)
            if len(self._queue) > self._max_queued:
                log.info(
                    "event stream client fell {count} events behind; disconnecting it",
                    count=len(self._queue),
                )
                self._close()
            return
        self._request.write(data)

    def _beat(self) -> None:
        self._heartbeat = None
        if self._closed:
            return
        if not self._paused:
            self._write(b": keepalive\n\n")
        self._heartbeat = self._clock.callLater(self._heartbeat_every, self._beat)

    def _close(self) -> None:
        if self._closed:
            return
        self._cleanup()
        self._request.unregisterProducer()
        self._request.finish()

    def _finished(self, result: object) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        self._queue.clear()
        self._events.unsubscribe(self.event)
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None

    # -- IPushProducer -------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused and not self._closed:
            self._request.write(self._queue.popleft())

    def stopProducing(self) -> None:
        self._cleanup()


class EventStreamResource(Resource):
    """Serves an :class:`EventLog` as ``text/event-stream``."""

    isLeaf = True

    def __init__(
        self,
        events: EventLog,
        clock: Any,
        heartbeat: float = HEARTBEAT,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        super().__init__()
        self._events = events
        self._clock = clock
        self._heartbeat = heartbeat
        self._max_queued = max_queued
        self.clients = 0

    def render_GET(self, request: Any) -> object:
        args = request.args
        last = request.getHeader(b"last-event-id")
        if last is None and args.get(b"last_event_id"):
            last = args[b"last_event_id"][0]
        last_id = last.decode("ascii", "replace") if isinstance(last, bytes) else last
        types = b",".join(args.get(b"types", [])).decode("utf-8", "replace").split(",")
        backlog = self._events.since(last_id)
        replay = list(backlog.events)
        if backlog.gap:
            before = replay[0].seq - 1 if replay else int(self._events.last_id.rpartition("-")[2])
            gap = Event(
                before,
                self._events.epoch,
                "stream.gap",
                self._clock.seconds(),
                {"reason": "events were missed; refresh what you show", "after": last_id},
            )
            replay.insert(0, gap)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        subscriber = _Subscriber(
            request, self._events, self._clock, _wanted(types), self._max_queued
        )
        self.clients += 1
        request.notifyFinish().addBoth(self._client_gone)
        subscriber.start(replay, self._heartbeat)
        return NOT_DONE_YET

    def _client_gone(self, result: object) -> None:
        self.clients -= 1

    def render_HEAD(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        return b""
