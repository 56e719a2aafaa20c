"""The event log: ids, the bounded buffer, resume, listeners, and the throttle."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from peerd.control.events import MAX_FIELDS_SIZE, EventLog


def make_log(capacity: int = 4) -> EventLog:
    clock = Clock()
    clock.advance(1000)
    return EventLog(clock.seconds, epoch="e1", capacity=capacity)


def test_ids_count_up_within_the_epoch() -> None:
    """Events get ids EPOCH-1, EPOCH-2, ... and keep their type, time and fields."""
    log = make_log()
    first = log.emit("peer.connected", peer="P1")
    second = log.emit("peer.disconnected", peer="P1", reason="bye")
    assert (first.id, second.id) == ("e1-1", "e1-2")
    assert log.last_id == "e1-2"
    assert second.to_dict() == {
        "id": "e1-2",
        "type": "peer.disconnected",
        "time": 1000.0,
        "peer": "P1",
        "reason": "bye",
    }


def test_buffer_keeps_only_the_newest() -> None:
    """Past its capacity the log drops the oldest events."""
    log = make_log(capacity=3)
    for i in range(5):
        log.emit("test.event", n=i)
    assert [e.fields["n"] for e in log.recent()] == [2, 3, 4]
    assert [e.fields["n"] for e in log.recent(2)] == [3, 4]


def test_resume_replays_what_followed() -> None:
    """A client that saw e1-2 gets e1-3 onwards, with no gap."""
    log = make_log()
    for i in range(4):
        log.emit("test.event", n=i)
    backlog = log.since("e1-2")
    assert not backlog.gap
    assert [e.id for e in backlog.events] == ["e1-3", "e1-4"]
    assert log.since("e1-4").events == []
    assert log.since(None).events == [] and not log.since(None).gap


def test_resume_from_the_oldest_edge_has_no_gap() -> None:
    """The id just before the oldest buffered event still resumes completely."""
    log = make_log(capacity=3)
    for i in range(5):
        log.emit("test.event", n=i)  # e1-3..e1-5 kept
    backlog = log.since("e1-2")
    assert not backlog.gap
    assert [e.id for e in backlog.events] == ["e1-3", "e1-4", "e1-5"]


@pytest.mark.parametrize(
    "last_id",
    ["e1-1", "e0-3", "e1-99", "garbage", "e1-x"],
    ids=["dropped", "other-run", "future", "malformed", "bad-number"],
)
def test_resume_past_the_buffer_is_a_gap(last_id: str) -> None:
    """Dropped events, another run's id, an unknown id: everything buffered, gap set."""
    log = make_log(capacity=3)
    for i in range(5):
        log.emit("test.event", n=i)
    backlog = log.since(last_id)
    assert backlog.gap
    assert [e.id for e in backlog.events] == ["e1-3", "e1-4", "e1-5"]


def test_listeners_hear_new_events_until_unsubscribed() -> None:
    """Subscribed listeners get each event; unsubscribed ones stop."""
    log = make_log()
    heard = []
    log.subscribe(heard.append)
    log.emit("test.one")
    log.unsubscribe(heard.append)
    log.unsubscribe(heard.append)  # unknown: ignored
    log.emit("test.two")
    assert [e.type for e in heard] == ["test.one"]
    assert log.listeners == 0


def test_volatile_events_are_not_buffered() -> None:
    """broadcast() reaches listeners but is neither buffered nor numbered."""
    log = make_log()
    heard = []
    log.subscribe(heard.append)
    log.emit("test.kept")
    tick = log.broadcast("stats.tick", n=1)
    assert heard[-1] is tick and tick.volatile
    assert [e.type for e in log.recent()] == ["test.kept"]
    assert log.last_id == "e1-1"
    assert not tick.to_sse().startswith(b"id:")


@pytest.mark.parametrize("bad", ["", "peer", "Peer.Connected", "peer..x", "peer.connected!"])
def test_malformed_types_are_refused(bad: str) -> None:
    """Types are dotted lowercase words."""
    with pytest.raises(ValueError, match="bad event type"):
        make_log().emit(bad)


def test_fields_are_json_and_bounded() -> None:
    """Unknown values become strings; more than 16 KiB of fields is refused."""
    log = make_log()
    event = log.emit("test.event", path=object.__new__(object).__class__)
    assert isinstance(event.fields["path"], str)
    with pytest.raises(ValueError, match="larger than"):
        log.emit("test.event", blob="x" * MAX_FIELDS_SIZE)


def test_sse_form() -> None:
    """An event is an SSE message: an id line and one data line of JSON."""
    event = make_log().emit("share.added", name="a\nb")
    lines = event.to_sse().decode().split("\n")
    assert lines[0] == "id: e1-1"
    assert lines[1].startswith("data: ") and lines[2:] == ["", ""]
    assert json.loads(lines[1][6:])["name"] == "a\nb"
