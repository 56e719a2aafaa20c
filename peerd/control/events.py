"""
The daemon's event log: typed events in a bounded buffer, for the event
stream (``/api/v1/events``), ``peerctl events`` and the dashboard.

An :class:`EventLog` is sans-IO: ``emit`` appends an :class:`Event` with the
next id and tells the listeners; :meth:`EventLog.since` answers what a
client that last saw an id has missed, or that it missed too much (the
buffer dropped the events it needs, or the daemon restarted) and must fetch
a fresh snapshot.

Event ids are ``EPOCH-SEQ``: ``EPOCH`` names this run of the daemon, ``SEQ``
counts from 1, so a ``Last-Event-ID`` from an earlier run is never mistaken
for one of this run.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_CAPACITY = 2048
MAX_FIELDS_SIZE = 16 * 1024

_TYPE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")

Listener = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``type`` like ``peer.connected``, and its fields."""

    seq: int
    epoch: str
    type: str
    time: float
    fields: dict = field(default_factory=dict)
    volatile: bool = False

    @property
    def id(self) -> str:
        """The SSE id, ``EPOCH-SEQ``."""
        return f"{self.epoch}-{self.seq}"

    def to_dict(self) -> dict:
        """The JSON form: ``{"id", "type", "time", "source"?, ...fields}``."""
        return {"id": self.id, "type": self.type, "time": self.time, **self.fields}

    def to_sse(self) -> bytes:
        """
        The event as an SSE message: an ``id`` and one ``data`` line holding
        the JSON (its ``type`` says what it is; no ``event:`` line, so
        ``EventSource.onmessage`` sees every type, including providers' own).
        """
        data = json.dumps(self.to_dict(), separators=(",", ":"))
        if self.volatile:  # not replayable: leave the client's last id alone
            return f"data: {data}\n\n".encode()
        return f"id: {self.id}\ndata: {data}\n\n".encode()


@dataclass(frozen=True)
class Backlog:
    """What a client asked to resume from gets: the events, and whether some were lost."""

    events: list[Event]
    gap: bool


def check_type(event_type: str) -> None:
    """
    :raises ValueError: unless ``event_type`` is dotted lowercase words
        (``download.progress``, ``files.share-added``).
    """
    if not isinstance(event_type, str) or not _TYPE.match(event_type):
        raise ValueError(
            f"bad event type {event_type!r}: dotted lowercase words, like 'download.completed'"
        )


def _json_fields(fields: dict) -> dict:
    """``fields`` made JSON-safe (unknown values become strings) and bounded in size."""
    text = json.dumps(fields, default=str, separators=(",", ":"))
    if len(text) > MAX_FIELDS_SIZE:
        raise ValueError(f"event fields are larger than {MAX_FIELDS_SIZE} bytes of JSON")
    return json.loads(text)


class EventLog:
    """
    The last ``capacity`` events, and who wants to hear of new ones.

    :param clock: ``clock()`` gives the POSIX time stamped on events.
    :param epoch: names this run (see the module docstring).
    """

    def __init__(
        self, clock: Callable[[], float], epoch: str, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not epoch or "-" in epoch:
            raise ValueError("the epoch must be a non-empty string without '-'")
        self._clock = clock
        self.epoch = epoch
        self.capacity = capacity
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._listeners: list[Listener] = []

    @property
    def last_id(self) -> str:
        """The id of the newest event (``EPOCH-0`` before the first)."""
        return f"{self.epoch}-{self._seq}"

    def emit(self, event_type: str, **fields: object) -> Event:
        """
        Record an event and tell every listener.

        :raises ValueError: a malformed type, or fields over 16 KiB of JSON.
        """
        check_type(event_type)
        self._seq += 1
        event = Event(self._seq, self.epoch, event_type, self._clock(), _json_fields(fields))
        self._events.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def broadcast(self, event_type: str, **fields: object) -> Event:
        """
        Tell the listeners of a *volatile* event: not buffered, not replayed
        on resume, and it does not move the client's last id (periodic
        figures such as ``stats.tick``, stale as soon as the next arrives).
        """
        check_type(event_type)
        event = Event(
            self._seq, self.epoch, event_type, self._clock(), _json_fields(fields), volatile=True
        )
        for listener in list(self._listeners):
            listener(event)
        return event

    def recent(self, limit: int | None = None) -> list[Event]:
        """The buffered events, oldest first (the newest ``limit`` of them)."""
        events = list(self._events)
        return events if limit is None else events[-limit:] if limit > 0 else []

    def since(self, last_event_id: str | None) -> Backlog:
        """
        The events after ``last_event_id``.

        No id means nothing to replay. An id from another run, a malformed
        one, one in the future, or one older than the buffer reaches gives
        what is buffered with ``gap`` set: the client missed events and
        should refresh its picture.
        """
        if last_event_id is None or last_event_id == "":
            return Backlog([], gap=False)
        epoch, _, seq_text = last_event_id.strip().rpartition("-")
        try:
            seq = int(seq_text)
        except ValueError:
            return Backlog(list(self._events), gap=True)
        if epoch != self.epoch or seq < 0 or seq > self._seq:
            return Backlog(list(self._events), gap=True)
        oldest = self._events[0].seq if self._events else self._seq + 1
        if seq < oldest - 1:
            return Backlog(list(self._events), gap=True)
        return Backlog([e for e in self._events if e.seq > seq], gap=False)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each event from now on."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        """How many listeners are subscribed."""
        return len(self._listeners)
