"""The event stream resource: replay on resume, gaps, filters, heartbeats, slow clients."""

from __future__ import annotations

import json

from http_helpers import call
from twisted.internet.task import Clock

from peerd.control.events import EventLog
from peerd.control.sse import EventStreamResource


def setup(capacity: int = 10, **kwargs) -> tuple[Clock, EventLog, EventStreamResource]:
    clock = Clock()
    log = EventLog(clock.seconds, epoch="run1", capacity=capacity)
    return clock, log, EventStreamResource(log, clock, **kwargs)


def messages(body: bytes) -> list[dict]:
    """The JSON of every data line in a (possibly chunked) SSE body."""
    found = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            found.append(json.loads(line[6:]))
    return found


def ids(body: bytes) -> list[str]:
    return [line[4:] for line in body.decode().splitlines() if line.startswith("id: ")]


def test_new_events_stream_to_the_client() -> None:
    """A client gets the stream headers, a retry hint, then events as they happen."""
    _, log, resource = setup()
    log.emit("test.before")
    answer = call(resource, "GET", "/api/v1/events")
    assert answer.status == 200
    assert answer.header("content-type").startswith("text/event-stream")
    assert b"retry: " in answer.body
    assert messages(answer.body) == []  # no id: nothing replayed
    log.emit("peer.connected", peer="P")
    body = answer.request.channel.transport.written.getvalue()
    assert [m["type"] for m in messages(body)] == ["peer.connected"]
    assert resource.clients == 1


def test_last_event_id_resumes() -> None:
    """Last-Event-ID replays exactly what followed it."""
    _, log, resource = setup()
    for n in range(5):
        log.emit("test.event", n=n)
    answer = call(resource, "GET", "/api/v1/events", {"Last-Event-ID": "run1-3"})
    assert [m["n"] for m in messages(answer.body)] == [3, 4]
    assert ids(answer.body) == ["run1-4", "run1-5"]


def test_query_parameter_resumes_too() -> None:
    """?last_event_id= works like the header (for clients that cannot set it)."""
    _, log, resource = setup()
    for n in range(3):
        log.emit("test.event", n=n)
    answer = call(resource, "GET", "/api/v1/events?last_event_id=run1-2")
    assert [m.get("n") for m in messages(answer.body)] == [2]


def test_resume_past_the_buffer_starts_with_a_gap() -> None:
    """An id the buffer no longer reaches (or another run's) gets stream.gap first."""
    _, log, resource = setup(capacity=2)
    for n in range(5):
        log.emit("test.event", n=n)
    answer = call(resource, "GET", "/api/v1/events", {"Last-Event-ID": "run1-1"})
    got = messages(answer.body)
    assert got[0]["type"] == "stream.gap"
    assert [m.get("n") for m in got[1:]] == [3, 4]
    assert ids(answer.body)[0] == "run1-3"  # so a reconnect after the gap resumes cleanly
    other_run = call(resource, "GET", "/api/v1/events", {"Last-Event-ID": "run0-4"})
    assert messages(other_run.body)[0]["type"] == "stream.gap"


def test_types_filter() -> None:
    """?types=peer keeps peer.* events only."""
    _, log, resource = setup()
    answer = call(resource, "GET", "/api/v1/events?types=peer")
    log.emit("download.started", cid="x")
    log.emit("peer.banned", peer="P")
    body = answer.request.channel.transport.written.getvalue()
    assert [m["type"] for m in messages(body)] == ["peer.banned"]


def test_heartbeat_comments() -> None:
    """A comment line goes out every heartbeat interval."""
    clock, _, resource = setup(heartbeat=5.0)
    answer = call(resource, "GET", "/api/v1/events")
    clock.advance(5.0)
    clock.advance(5.0)
    body = answer.request.channel.transport.written.getvalue()
    assert body.count(b": keepalive") == 2


def test_a_client_that_goes_away_is_forgotten() -> None:
    """When the connection closes the client unsubscribes and its timer stops."""
    clock, log, resource = setup()
    answer = call(resource, "GET", "/api/v1/events")
    assert log.listeners == 1
    answer.request.connectionLost(Exception("gone"))
    assert log.listeners == 0 and resource.clients == 0
    assert clock.getDelayedCalls() == []


def test_a_slow_client_is_queued_then_dropped() -> None:
    """While paused, events queue (bounded); past the bound the client is disconnected."""
    _, log, resource = setup(max_queued=3)
    answer = call(resource, "GET", "/api/v1/events")
    [(subscriber, streaming)] = answer.request.channel.transport.producers
    assert streaming
    subscriber.pauseProducing()  # what the HTTP channel does when the socket is full
    for n in range(3):
        log.emit("test.event", n=n)
    before = answer.request.channel.transport.written.getvalue()
    assert messages(before) == []
    subscriber.resumeProducing()
    after = answer.request.channel.transport.written.getvalue()
    assert [m["n"] for m in messages(after)] == [0, 1, 2]
    subscriber.pauseProducing()
    for n in range(5):
        log.emit("test.event", n=n)
    assert log.listeners == 0, "the slow client was dropped"
    assert answer.request.finished
