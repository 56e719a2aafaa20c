"""The session layer: handshake, stream lifecycle, flow control, fairness, errors."""

from __future__ import annotations

import pytest
from session_pair import SessionPair, hello_for, split_frames

from peerd.wire import events as ev
from peerd.wire.frames import (
    MIN_FRAME_SIZE,
    FrameType,
    ProtocolError,
    encode_frame,
)
from peerd.wire.messages import Hello, Open, Reason
from peerd.wire.session import Session, SessionState


def raw(frame_type: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    return encode_frame(frame_type, stream_id, payload)


def open_frame(stream_id: int, provider: str = "echo") -> bytes:
    return raw(FrameType.OPEN, stream_id, Open(provider).encode())


def data_events(events: list) -> list:
    return [e for e in events if isinstance(e, ev.DataReceived)]


# -- handshake ---------------------------------------------------------------


def test_handshake_opens_both_sides():
    """After both HELLOs cross, each side is OPEN and reports the other's HELLO."""
    pair = SessionPair(handshake=False)
    pair.dialer.send_hello(hello_for(pair.dialer, "dialer"))
    pair.listener.send_hello(hello_for(pair.listener, "listener"))
    assert pair.dialer.state is SessionState.AWAITING_HELLO
    pair.pump()
    assert pair.dialer.state is pair.listener.state is SessionState.OPEN
    assert pair.events[pair.dialer] == [ev.HelloReceived(hello_for(pair.listener, "listener"))]
    assert pair.events[pair.listener] == [ev.HelloReceived(hello_for(pair.dialer, "dialer"))]
    assert pair.listener.remote_hello.peer_id == "dialer"


def test_hello_sent_twice_is_refused_locally():
    """Queuing a second HELLO is a programming error (RuntimeError)."""
    session = Session(initiator=True)
    session.send_hello(hello_for(session, "x"))
    with pytest.raises(RuntimeError):
        session.send_hello(hello_for(session, "x"))


@pytest.mark.parametrize(
    "first",
    [
        open_frame(1),
        raw(FrameType.DATA, 1, b"x"),
        raw(FrameType.PING, 0, b"12345678"),
        raw(FrameType.WINDOW, 1, b"\x00\x00\x00\x01"),
    ],
    ids=["OPEN", "DATA", "PING", "WINDOW"],
)
def test_hello_must_come_first(first):
    """A stream or keepalive frame before the peer's HELLO is a ProtocolError."""
    session = Session(initiator=False)
    with pytest.raises(ProtocolError, match="expected HELLO"):
        session.receive_data(first)


def test_second_hello_is_protocol_error():
    """A peer that sends HELLO twice breaks the protocol."""
    pair = SessionPair()
    with pytest.raises(ProtocolError, match="second HELLO"):
        pair.listener.receive_data(raw(FrameType.HELLO, 0, hello_for(pair.dialer, "d").encode()))


def test_version_mismatch():
    """A HELLO with another protocol version is a ProtocolError with code ``version``."""
    session = Session(initiator=True)
    hello = Hello(peer_id="p", agent="a", version=2)
    with pytest.raises(ProtocolError) as caught:
        session.receive_data(raw(FrameType.HELLO, 0, hello.encode()))
    assert caught.value.code == "version"
    assert session.state is SessionState.AWAITING_HELLO


@pytest.mark.parametrize(
    "changes",
    [
        {"max_frame_size": MIN_FRAME_SIZE - 1},
        {"max_frame_size": 16 * 1024 * 1024 + 1},
        {"window": 0},
        {"window": 2**31},
    ],
    ids=repr,
)
def test_hello_limits_out_of_range(changes):
    """A HELLO announcing a frame size or window outside the allowed range is rejected."""
    session = Session(initiator=True)
    hello = Hello(peer_id="p", agent="a", **changes)
    with pytest.raises(ProtocolError):
        session.receive_data(raw(FrameType.HELLO, 0, hello.encode()))


def test_malformed_hello_payload():
    """A HELLO whose payload is not a valid HELLO map is a ProtocolError."""
    with pytest.raises(ProtocolError, match="HELLO"):
        Session(initiator=True).receive_data(raw(FrameType.HELLO, 0, b"\x93\x01\x02\x03"))


def test_frame_too_large_for_session():
    """A header announcing more than the session's max_frame_size is rejected on sight."""
    pair = SessionPair(listener={"max_frame_size": MIN_FRAME_SIZE})
    header_only = raw(FrameType.DATA, 1, b"x" * (MIN_FRAME_SIZE + 1))[:10]
    with pytest.raises(ProtocolError) as caught:
        pair.listener.receive_data(header_only)
    assert caught.value.code == "frame-too-large"


def test_open_stream_before_hello_received():
    """Opening a stream before the peer's HELLO arrived is a RuntimeError."""
    with pytest.raises(RuntimeError, match="awaiting-hello"):
        Session(initiator=True).open_stream("echo")


def test_invalid_max_frame_size_argument():
    """A Session cannot be built with a max_frame_size outside the protocol's range."""
    with pytest.raises(ValueError):
        Session(initiator=True, max_frame_size=MIN_FRAME_SIZE - 1)


# -- stream lifecycle ----------------------------------------------------------


def test_open_data_close_lifecycle():
    """
    OPEN, DATA and CLOSE each way produce StreamOpened, DataReceived,
    StreamEnded and finally StreamClosed on both sides, in that order.
    """
    pair = SessionPair()
    d, listener = pair.dialer, pair.listener
    sid = d.open_stream("echo", {"k": "v"})
    d.send_data(sid, b"hello ")
    d.send_data(sid, b"world")
    d.end_stream(sid)
    pair.pump()
    assert pair.events[listener] == [
        ev.StreamOpened(sid, "echo", {"k": "v"}),
        ev.DataReceived(sid, b"hello world"),
        ev.StreamEnded(sid),
    ]
    assert pair.events[d] == []
    assert d.is_open(sid) and listener.is_open(sid)
    pair.clear()

    listener.send_data(sid, b"reply")
    listener.end_stream(sid)
    pair.pump()
    assert pair.events[d] == [
        ev.DataReceived(sid, b"reply"),
        ev.StreamEnded(sid),
        ev.StreamClosed(sid),
    ]
    assert pair.events[listener] == [ev.StreamClosed(sid)]
    assert not d.is_open(sid) and not listener.is_open(sid)
    assert d.stream_count == listener.stream_count == 0


def test_close_without_data_after_peer_closed():
    """Ending a stream the peer already ended closes it at once (event via pop_events)."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.dialer.end_stream(sid)
    pair.pump()
    pair.clear()
    pair.listener.end_stream(sid)
    assert pair.listener.pop_events() == [ev.StreamClosed(sid)]
    pair.pump()
    assert pair.events[pair.dialer] == [ev.StreamEnded(sid), ev.StreamClosed(sid)]


def test_send_after_end_is_ignored():
    """Data queued after ``end_stream`` is dropped; the peer sees only the earlier bytes."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.dialer.send_data(sid, b"a")
    pair.dialer.end_stream(sid)
    pair.dialer.send_data(sid, b"b")
    pair.pump()
    assert pair.received(pair.listener, sid) == b"a"


def test_data_after_close_is_protocol_error():
    """DATA on a stream after the peer's CLOSE breaks the protocol."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.dialer.end_stream(sid)
    pair.pump()
    with pytest.raises(ProtocolError, match="after its CLOSE"):
        pair.listener.receive_data(raw(FrameType.DATA, sid, b"late"))


def test_second_close_is_protocol_error():
    """A second CLOSE on the same stream breaks the protocol."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.dialer.end_stream(sid)
    pair.pump()
    with pytest.raises(ProtocolError, match="second CLOSE"):
        pair.listener.receive_data(raw(FrameType.CLOSE, sid))


@pytest.mark.parametrize("frame_type", [FrameType.DATA, FrameType.CLOSE, FrameType.RESET])
def test_stream_frames_on_stream_zero(frame_type):
    """DATA, CLOSE and RESET on stream 0 are ProtocolErrors."""
    pair = SessionPair()
    payload = Reason("x").encode() if frame_type is FrameType.RESET else b""
    with pytest.raises(ProtocolError, match="stream 0"):
        pair.listener.receive_data(raw(frame_type, 0, payload))


# -- stream ids ----------------------------------------------------------------


def test_stream_id_parity():
    """The dialer numbers its streams 1, 3, 5...; the listener 2, 4, 6..."""
    pair = SessionPair()
    assert [pair.dialer.open_stream("p") for _ in range(3)] == [1, 3, 5]
    assert [pair.listener.open_stream("p") for _ in range(3)] == [2, 4, 6]
    pair.pump()
    opened = [e.stream_id for e in pair.events[pair.listener] if isinstance(e, ev.StreamOpened)]
    assert opened == [1, 3, 5]
    opened = [e.stream_id for e in pair.events[pair.dialer] if isinstance(e, ev.StreamOpened)]
    assert opened == [2, 4, 6]


@pytest.mark.parametrize(
    ("side", "stream_id"), [("listener", 2), ("listener", 0), ("dialer", 1), ("dialer", 0)]
)
def test_wrong_parity_open(side, stream_id):
    """An OPEN with the receiver's own parity (or stream 0) is a ProtocolError."""
    pair = SessionPair()
    with pytest.raises(ProtocolError, match="parity"):
        getattr(pair, side).receive_data(open_frame(stream_id))


def test_duplicate_open_is_protocol_error():
    """Opening a stream id that is already open breaks the protocol."""
    pair = SessionPair()
    pair.listener.receive_data(open_frame(1))
    with pytest.raises(ProtocolError, match="already open"):
        pair.listener.receive_data(open_frame(1))


def test_malformed_open_payload():
    """An OPEN whose payload is not a valid OPEN body is a ProtocolError."""
    pair = SessionPair()
    with pytest.raises(ProtocolError, match="OPEN"):
        pair.listener.receive_data(raw(FrameType.OPEN, 1, b"\xc0"))


# -- flow control ----------------------------------------------------------------


def test_sender_stops_at_exactly_the_window():
    """
    A sender puts exactly the peer's window on the wire and then waits;
    returning credit with ``consumed`` lets exactly that much more through.
    """
    window = 1000
    pair = SessionPair(listener={"window": window})
    sid = pair.dialer.open_stream("bulk")
    payload = bytes(range(256)) * 20  # 5120 bytes
    pair.dialer.send_data(sid, payload)
    pair.pump()
    assert len(pair.received(pair.listener, sid)) == window
    assert pair.dialer.pending_bytes(sid) == len(payload) - window
    assert not pair.dialer.has_output()

    pair.listener.consumed(sid, window // 2 - 1)  # under half the window: no WINDOW yet
    pair.pump()
    assert len(pair.received(pair.listener, sid)) == window

    pair.listener.consumed(sid, 1)  # half the window: credit goes back
    pair.pump()
    assert len(pair.received(pair.listener, sid)) == window + window // 2
    assert ev.WindowOpened(sid) in pair.events[pair.dialer]


def test_outstanding_never_exceeds_window():
    """Across many rounds of partial consumption, unconsumed bytes never exceed the window."""
    window = 4096
    pair = SessionPair(listener={"window": window})
    sid = pair.dialer.open_stream("bulk")
    payload = bytes(i % 251 for i in range(50_000))
    pair.dialer.send_data(sid, payload)
    pair.dialer.end_stream(sid)
    delivered = consumed = 0
    for _ in range(1000):
        pair.pump()
        delivered = len(pair.received(pair.listener, sid))
        assert delivered - consumed <= window
        if delivered == consumed:
            break
        step = min(700, delivered - consumed)
        pair.listener.consumed(sid, step)
        consumed += step
    assert pair.received(pair.listener, sid) == payload
    assert ev.StreamEnded(sid) in pair.events[pair.listener]


def test_close_waits_behind_blocked_data():
    """A CLOSE queued behind window-blocked data is sent only after that data."""
    pair = SessionPair(listener={"window": 100})
    sid = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(sid, b"x" * 250)
    pair.dialer.end_stream(sid)
    pair.pump()
    assert ev.StreamEnded(sid) not in pair.events[pair.listener]
    pair.listener.consumed(sid, 100)
    pair.pump()
    pair.listener.consumed(sid, 100)
    pair.pump()
    assert pair.received(pair.listener, sid) == b"x" * 250
    assert pair.events[pair.listener][-1] == ev.StreamEnded(sid)


def test_frames_respect_peer_max_frame_size():
    """No DATA frame is larger than the max_frame_size the peer announced."""
    pair = SessionPair(listener={"max_frame_size": MIN_FRAME_SIZE})
    sid = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(sid, b"y" * (5 * MIN_FRAME_SIZE + 3))
    frames = split_frames(pair.dialer.data_to_send())
    sizes = [len(f.payload) for f in frames if f.type is FrameType.DATA]
    assert sizes == [MIN_FRAME_SIZE] * 5 + [3]


def test_consumed_zero_sends_no_empty_window():
    """
    ``consumed(stream, 0)`` never emits a zero WINDOW (which the peer must
    treat as a ProtocolError), even with a window of 1 byte.
    """
    pair = SessionPair(dialer={"window": 1}, listener={"window": 1})
    sid = pair.dialer.open_stream("p")
    pair.pump()
    pair.listener.consumed(sid, 0)
    pair.pump()
    pair.listener.send_data(sid, b"ab")
    pair.pump()
    assert pair.received(pair.dialer, sid) == b"a"
    pair.dialer.consumed(sid, 1)
    pair.pump()
    assert pair.received(pair.dialer, sid) == b"ab"


def test_window_overrun_is_flow_control_error():
    """A peer that sends more than the window it was granted gets ``flow-control``."""
    pair = SessionPair(listener={"window": 100})
    pair.listener.receive_data(open_frame(1))
    pair.listener.receive_data(raw(FrameType.DATA, 1, b"a" * 60))
    with pytest.raises(ProtocolError) as caught:
        pair.listener.receive_data(raw(FrameType.DATA, 1, b"a" * 41))
    assert caught.value.code == "flow-control"


def test_window_exactly_used_is_fine():
    """Using the whole window, in one frame, is allowed."""
    pair = SessionPair(listener={"window": 100})
    pair.listener.receive_data(open_frame(1))
    events = pair.listener.receive_data(raw(FrameType.DATA, 1, b"a" * 100))
    assert events == [ev.DataReceived(1, b"a" * 100)]


@pytest.mark.parametrize(
    "payload", [b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01", b"\x00\x00\x00\x01\x00"]
)
def test_bad_window_frames(payload):
    """A WINDOW of zero, one that overflows 2**31-1, or not 4 bytes long is a ProtocolError."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("p")
    with pytest.raises(ProtocolError, match="WINDOW"):
        pair.dialer.receive_data(raw(FrameType.WINDOW, sid, payload))


# -- fairness ------------------------------------------------------------------------


def test_small_stream_not_starved_by_bulk():
    """
    With megabytes queued on a bulk stream, a small message on a second
    stream goes out in the first batch: control frames first, then one DATA
    frame per stream in turn.
    """
    pair = SessionPair(listener={"window": 16 * 1024 * 1024})
    bulk = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(bulk, b"B" * (8 * 1024 * 1024))
    small = pair.dialer.open_stream("chat")
    pair.dialer.send_data(small, b"hi!")
    pair.dialer.ping(b"pingpong")

    frames = split_frames(pair.dialer.data_to_send())
    kinds = [(f.type, f.stream_id) for f in frames]
    assert kinds[:3] == [(FrameType.OPEN, bulk), (FrameType.OPEN, small), (FrameType.PING, 0)]
    assert kinds[3:5] == [(FrameType.DATA, bulk), (FrameType.DATA, small)]
    assert frames[4].payload == b"hi!"
    assert all(k == (FrameType.DATA, bulk) for k in kinds[5:])
    assert pair.dialer.pending_bytes(small) == 0
    assert pair.dialer.pending_bytes(bulk) > 4 * 1024 * 1024 - 256 * 1024


def test_round_robin_between_bulk_streams():
    """Two bulk streams alternate frame by frame."""
    pair = SessionPair(listener={"window": 16 * 1024 * 1024})
    a = pair.dialer.open_stream("bulk")
    b = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(a, b"a" * (2 * 1024 * 1024))
    pair.dialer.send_data(b, b"b" * (2 * 1024 * 1024))
    frames = split_frames(pair.dialer.data_to_send())
    ids = [f.stream_id for f in frames if f.type is FrameType.DATA]
    assert ids[:6] == [a, b, a, b, a, b]


def test_control_frames_jump_the_queue():
    """A PONG owed to the peer goes out ahead of queued bulk data."""
    pair = SessionPair(listener={"window": 16 * 1024 * 1024})
    bulk = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(bulk, b"B" * (8 * 1024 * 1024))
    pair.dialer.data_to_send(budget=1)  # OPEN and one DATA frame; the rest is queued
    pair.dialer.receive_data(raw(FrameType.PING, 0, b"abcdefgh"))
    frames = split_frames(pair.dialer.data_to_send())
    assert (frames[0].type, frames[0].payload) == (FrameType.PONG, b"abcdefgh")


# -- reset -----------------------------------------------------------------------------


def test_reset_drops_buffered_data():
    """
    ``reset_stream`` discards queued data at once; the peer gets StreamReset
    with the code and reason and no further data for the stream.
    """
    pair = SessionPair(listener={"window": 1000})
    sid = pair.dialer.open_stream("bulk")
    pair.dialer.send_data(sid, b"z" * 5000)
    pair.pump()
    pair.dialer.send_data(sid, b"more")
    pair.dialer.reset_stream(sid, "cancel", "user gave up")
    assert pair.dialer.pending_bytes(sid) == 0
    assert not pair.dialer.is_open(sid)
    chunks = pair.dialer.data_to_send()
    assert [f.type for f in split_frames(chunks)] == [FrameType.RESET]
    events = pair.listener.receive_data(b"".join(chunks))
    assert events == [ev.StreamReset(sid, "cancel", "user gave up")]
    pair.dialer.reset_stream(sid, "again")  # unknown now: nothing is sent
    assert not pair.dialer.has_output()


def test_peer_sees_stream_reset():
    """The peer reports StreamReset(stream, code, reason) and forgets the stream."""
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.pump()
    pair.clear()
    pair.dialer.reset_stream(sid, "cancel", "user gave up")
    pair.pump()
    assert pair.events[pair.listener] == [ev.StreamReset(sid, "cancel", "user gave up")]
    assert not pair.listener.is_open(sid)


def test_reset_while_queued_in_round_robin():
    """A stream reset while waiting its turn sends no DATA; other streams carry on."""
    pair = SessionPair()
    a = pair.dialer.open_stream("a")
    b = pair.dialer.open_stream("b")
    pair.dialer.send_data(a, b"aaa")
    pair.dialer.send_data(b, b"bbb")
    pair.dialer.reset_stream(a, "cancel")
    pair.pump()
    assert pair.received(pair.listener, a) == b""
    assert pair.received(pair.listener, b) == b"bbb"


def test_late_frames_for_reset_stream_ignored():
    """
    DATA, WINDOW, CLOSE and RESET that cross our RESET on the wire are
    dropped silently: no events, no error.
    """
    pair = SessionPair()
    sid = pair.dialer.open_stream("echo")
    pair.pump()
    pair.clear()
    pair.listener.reset_stream(sid, "refused")
    pair.dialer.send_data(sid, b"in flight")
    pair.dialer.consumed(sid, 10**6)
    pair.dialer.end_stream(sid)
    in_flight = b"".join(pair.dialer.data_to_send())
    assert in_flight  # DATA, WINDOW and CLOSE were sent before the RESET arrived
    assert pair.listener.receive_data(in_flight) == []
    assert pair.listener.receive_data(raw(FrameType.RESET, sid, Reason("x").encode())) == []
    pair.pump()
    assert pair.events[pair.dialer] == [ev.StreamReset(sid, "refused", "")]
    assert pair.events[pair.listener] == []


def test_malformed_reset_payload():
    """A RESET without a valid reason body is a ProtocolError."""
    pair = SessionPair()
    with pytest.raises(ProtocolError, match="RESET"):
        pair.listener.receive_data(raw(FrameType.RESET, 1, b"\x80"))


# -- limits ------------------------------------------------------------------------------


def test_max_streams_refuses_extra_open():
    """
    An OPEN beyond ``max_streams`` is answered with RESET ``too-many-streams``;
    the session and the existing streams carry on.
    """
    pair = SessionPair(listener={"max_streams": 2})
    first, second, third = (pair.dialer.open_stream("p") for _ in range(3))
    pair.dialer.send_data(third, b"dropped")
    pair.dialer.send_data(first, b"kept")
    pair.pump()
    opened = [e.stream_id for e in pair.events[pair.listener] if isinstance(e, ev.StreamOpened)]
    assert opened == [first, second]
    resets = [e for e in pair.events[pair.dialer] if isinstance(e, ev.StreamReset)]
    assert [(r.stream_id, r.code) for r in resets] == [(third, "too-many-streams")]
    assert pair.received(pair.listener, first) == b"kept"
    assert pair.received(pair.listener, third) == b""
    assert pair.listener.state is SessionState.OPEN
    assert pair.listener.stream_count == 2

    pair.dialer.end_stream(first)
    pair.listener.end_stream(first)
    pair.pump()
    pair.clear()
    fourth = pair.dialer.open_stream("p")
    pair.pump()
    assert ev.StreamOpened(fourth, "p", {}) in pair.events[pair.listener]


# -- ping, goaway --------------------------------------------------------------------------


def test_ping_pong():
    """A PING is answered with a PONG carrying the same 8 bytes."""
    pair = SessionPair()
    pair.dialer.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    pair.pump()
    assert pair.events[pair.dialer] == [ev.PongReceived(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    assert pair.events[pair.listener] == []


def test_ping_payload_must_be_8_bytes():
    """``ping`` refuses anything but 8 bytes; a malformed PING or PONG is a ProtocolError."""
    session = SessionPair().dialer
    with pytest.raises(ValueError):
        session.ping(b"short")
    for frame in (
        raw(FrameType.PING, 0, b"1234567"),
        raw(FrameType.PING, 1, b"12345678"),
        raw(FrameType.PONG, 0, b"123456789"),
        raw(FrameType.PONG, 2, b"12345678"),
    ):
        with pytest.raises(ProtocolError):
            session.receive_data(frame)


def test_goaway():
    """
    GOAWAY reaches the peer as GoAwayReceived(code, reason); neither side can
    open new streams, and a late OPEN is refused with RESET ``shutdown``.
    """
    pair = SessionPair()
    sid = pair.dialer.open_stream("p")
    pair.pump()
    pair.dialer.go_away("shutdown", "restarting")
    assert pair.dialer.state is SessionState.GOING_AWAY
    pair.listener.open_stream("late")  # crosses the GOAWAY on the wire
    pair.pump()
    assert ev.GoAwayReceived("shutdown", "restarting") in pair.events[pair.listener]
    assert pair.listener.state is SessionState.CLOSED
    assert [
        (e.stream_id, e.code) for e in pair.events[pair.listener] if isinstance(e, ev.StreamReset)
    ] == [(2, "shutdown")]
    for side in (pair.dialer, pair.listener):
        with pytest.raises(RuntimeError):
            side.open_stream("p")
    pair.dialer.send_data(sid, b"still flowing")
    pair.pump()
    assert pair.received(pair.listener, sid) == b"still flowing"


def test_go_away_sent_once():
    """A second ``go_away`` queues nothing."""
    session = SessionPair().dialer
    session.go_away("a")
    session.data_to_send()
    session.go_away("b")
    assert not session.has_output()


# -- accounting ---------------------------------------------------------------------------


def test_bytes_sent_and_received_add_up():
    """Each side's ``bytes_sent`` equals the bytes it handed out and the peer's ``bytes_received``."""
    pair = SessionPair(handshake=False, listener={"window": 20_000})
    handed = {pair.dialer: 0, pair.listener: 0}

    def pump():
        while pair.dialer.has_output() or pair.listener.has_output():
            for side in (pair.dialer, pair.listener):
                chunks = side.data_to_send(budget=30_000)
                handed[side] += sum(map(len, chunks))
                events = pair.peer(side).receive_data(b"".join(chunks))
                for e in events:
                    if isinstance(e, ev.DataReceived):
                        pair.peer(side).consumed(e.stream_id, len(e.data))

    pair.dialer.send_hello(hello_for(pair.dialer, "d"))
    pair.listener.send_hello(hello_for(pair.listener, "l"))
    pump()
    sid = pair.dialer.open_stream("p")
    pair.dialer.send_data(sid, b"q" * 100_000)
    pair.dialer.end_stream(sid)
    pair.dialer.ping(b"12345678")
    pump()
    pair.listener.send_data(sid, b"r" * 7)
    pair.listener.end_stream(sid)
    pump()
    assert not pair.dialer.is_open(sid)
    for side in (pair.dialer, pair.listener):
        assert side.bytes_sent == handed[side] == pair.peer(side).bytes_received


def test_goaway_may_stand_in_for_hello():
    """A refusing peer may answer with GOAWAY instead of HELLO; the session reports why."""
    session = Session(initiator=True)
    events = session.receive_data(raw(FrameType.GOAWAY, 0, Reason("not-allowed", "go").encode()))
    assert [type(e).__name__ for e in events] == ["GoAwayReceived"]
    assert (events[0].code, events[0].reason) == ("not-allowed", "go")


def test_update_announces_new_addresses():
    """UPDATE carries the sender's new dialable addresses to the peer."""
    pair = SessionPair()
    pair.dialer.send_update(["X@127.0.0.1:1"])
    pair.pump()
    events = pair.events[pair.listener]
    assert [(type(e).__name__, e.listen) for e in events] == [
        ("AddressesUpdated", ["X@127.0.0.1:1"])
    ]
