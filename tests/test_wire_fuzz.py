"""Property and fuzz tests for the wire session: hostile bytes, random interleavings."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from session_pair import SessionPair, hello_for

from peerd.wire import events as ev
from peerd.wire.frames import HEADER, HEADER_SIZE, MIN_FRAME_SIZE, FrameType, ProtocolError
from peerd.wire.messages import Open, Reason, pack
from peerd.wire.session import Session

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

payloads = st.one_of(
    st.binary(max_size=64),
    msgpack_values.map(pack),
    st.builds(
        lambda p, h: Open(p, h).encode(),
        st.text(max_size=8),
        st.dictionaries(st.text(max_size=4), msgpack_values, max_size=3),
    ),
    st.builds(lambda c, r: Reason(c, r).encode(), st.text(max_size=8), st.text(max_size=8)),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.binary(min_size=8, max_size=8),
)


@st.composite
def frame_bytes(draw) -> bytes:
    """A header (mostly valid, sometimes with a wrong length/type/flags) plus a payload."""
    payload = draw(payloads)
    frame_type = draw(st.sampled_from(FrameType) | st.integers(0, 255))
    flags = draw(st.just(0) | st.integers(0, 255))
    stream_id = draw(st.integers(0, 8) | st.integers(0, 2**32 - 1))
    length = draw(st.just(len(payload)) | st.integers(0, 2**32 - 1))
    return HEADER.pack(length, frame_type, flags, stream_id) + payload


wire_chunks = st.lists(st.binary(max_size=40) | frame_bytes(), max_size=30)


def feed_checked(session: Session, chunks: list[bytes]) -> None:
    """
    Feed ``chunks``; each call must return events or raise ProtocolError,
    the session's output must stay producible, and the decoder never holds
    more than one header plus one maximal frame.
    """
    limit = HEADER_SIZE + session.max_frame_size
    for chunk in chunks:
        try:
            events = session.receive_data(chunk)
        except ProtocolError as e:
            assert isinstance(e.code, str) and e.code
            return
        assert isinstance(events, list)
        # Reading (not patching) the decoder: the session has no public view of it.
        assert session._decoder.buffered <= limit
        session.data_to_send()
        session.pop_events()


@given(st.booleans(), wire_chunks)
@FUZZ
def test_fuzz_after_hello(initiator, chunks):
    """After a valid HELLO, arbitrary frames and bytes give events or ProtocolError, nothing else."""
    session = Session(initiator=initiator, max_frame_size=MIN_FRAME_SIZE, window=1000)
    session.send_hello(hello_for(session, "me"))
    peer = Session(initiator=not initiator)
    hello = hello_for(peer, "peer").encode()
    session.receive_data(HEADER.pack(len(hello), FrameType.HELLO, 0, 0) + hello)
    session.open_stream("p")
    feed_checked(session, chunks)


@given(st.booleans(), wire_chunks)
@FUZZ
def test_fuzz_without_hello(initiator, chunks):
    """Before any HELLO, arbitrary frames and bytes give events or ProtocolError, nothing else."""
    session = Session(initiator=initiator, max_frame_size=MIN_FRAME_SIZE)
    feed_checked(session, chunks)


@given(st.binary(min_size=1, max_size=4096), st.booleans())
@settings(max_examples=200, deadline=None)
def test_fuzz_raw_bytes(data, hello_first):
    """Pure random bytes, with or without a HELLO first, give events or ProtocolError."""
    session = Session(initiator=True, max_frame_size=MIN_FRAME_SIZE)
    chunks = [data[i : i + 97] for i in range(0, len(data), 97)]
    if hello_first:
        hello = hello_for(Session(initiator=False), "peer").encode()
        chunks.insert(0, HEADER.pack(len(hello), FrameType.HELLO, 0, 0) + hello)
    feed_checked(session, chunks)


# Patterned rather than random bytes: cheap to draw at any size, and a
# reordered, lost or duplicated slice never matches.
stream_bytes = st.builds(
    lambda size, seed: bytes((seed + i * 7) % 251 for i in range(size)),
    st.integers(1, 8000),
    st.integers(0, 250),
)
windows = st.sampled_from([1, 100, 1000, 65536]) | st.integers(1, 5000)


class Interleavings(RuleBasedStateMachine):
    """
    Two honest sessions driven by random open/send/consume/end/reset calls and
    partial transfers: no ProtocolError ever (so no sender overruns a window:
    the receiver would raise ``flow-control``), every stream's bytes arrive in
    order and intact once the receivers consume, and end-of-stream arrives
    after the last byte.
    """

    streams = Bundle("streams")

    @initialize(target=streams, dialer_window=windows, listener_window=windows)
    def start(self, dialer_window, listener_window):
        self.pair = SessionPair(
            dialer={"window": dialer_window, "max_frame_size": MIN_FRAME_SIZE},
            listener={"window": listener_window, "max_frame_size": MIN_FRAME_SIZE},
        )
        self.sides = (self.pair.dialer, self.pair.listener)
        # (sender index, stream id) -> bytes queued while the stream was open
        self.sent: dict[tuple[int, int], bytearray] = {}
        self.ended: set[tuple[int, int]] = set()
        self.reset: set[int] = set()
        # (receiver index, stream id) -> bytes received but not yet consumed
        self.unconsumed: dict[tuple[int, int], int] = {}
        # receiver index -> how many of its recorded events _collect has seen
        self.cursor: dict[int, int] = {}
        first = [self.pair.dialer.open_stream("p"), self.pair.dialer.open_stream("p")]
        first.append(self.pair.listener.open_stream("p"))
        self.pump()
        return multiple(*first)

    def _collect(self):
        """Account newly reported DATA as unconsumed, per receiving side."""
        for index, side in enumerate(self.sides):
            recorded = self.pair.events[side]
            start = self.cursor.get(index, 0)
            for happened in recorded[start:]:
                if isinstance(happened, ev.DataReceived):
                    key = (index, happened.stream_id)
                    self.unconsumed[key] = self.unconsumed.get(key, 0) + len(happened.data)
                elif isinstance(happened, ev.StreamReset):
                    self.reset.add(happened.stream_id)
            self.cursor[index] = len(recorded)

    def total_sent(self) -> int:
        return sum(map(len, self.sent.values()))

    @precondition(lambda self: len(self.sent) < 40)
    @rule(target=streams, side=st.sampled_from([0, 1]))
    def open(self, side):
        return self.sides[side].open_stream("p", {"n": side})

    @precondition(lambda self: len(self.sent) < 40 and self.total_sent() < 40_000)
    @rule(target=streams, data=stream_bytes)
    def open_and_send(self, data):
        sid = self.sides[0].open_stream("p")
        self.send(sid, 0, data)
        return sid

    @precondition(lambda self: self.total_sent() < 40_000)  # window 1 drains a byte a trip
    @rule(stream=streams, side=st.sampled_from([0, 1]), data=stream_bytes)
    def send(self, stream, side, data):
        session = self.sides[side]
        key = (side, stream)
        if session.is_open(stream) and key not in self.ended:
            self.sent.setdefault(key, bytearray()).extend(data)
        session.send_data(stream, data)

    @rule(stream=streams, side=st.sampled_from([0, 1]))
    def end(self, stream, side):
        if self.sides[side].is_open(stream):
            self.ended.add((side, stream))
        self.sides[side].end_stream(stream)
        self.pair.events[self.sides[side]].extend(self.sides[side].pop_events())

    @rule(stream=streams, side=st.sampled_from([0, 1]))
    def reset_it(self, stream, side):
        if self.sides[side].is_open(stream):
            self.reset.add(stream)
        self.sides[side].reset_stream(stream, "cancel", "test")

    @rule(side=st.sampled_from([0, 1]), fraction=st.floats(0, 1))
    def consume(self, side, fraction):
        self._collect()
        for (index, sid), count in list(self.unconsumed.items()):
            amount = int(count * fraction)
            if index == side and amount:
                self.sides[side].consumed(sid, amount)
                self.unconsumed[(index, sid)] = count - amount

    @rule(side=st.sampled_from([0, 1]), budget=st.integers(1, 40_000))
    def transfer(self, side, budget):
        self.pair.transfer(self.sides[side], budget)
        self._collect()

    @rule()
    def pump(self):
        self.pair.pump()
        self._collect()
        if any(self.sides[i].pending_bytes(sid) for i, sid in self.sent):
            event("a sender was blocked by its window")

    @invariant()
    def delivered_is_prefix(self):
        """What each side has received on a stream is a prefix of what the other sent."""
        if not hasattr(self, "pair"):
            return
        for (sender, sid), data in self.sent.items():
            got = self.pair.received(self.sides[1 - sender], sid)
            assert bytes(data).startswith(got)

    def teardown(self):
        if not hasattr(self, "pair"):
            return
        for _ in range(100_000):
            self.pair.pump()
            self._collect()
            pending = [(k, n) for k, n in self.unconsumed.items() if n]
            if not pending and not any(s.has_output() for s in self.sides):
                break
            for (index, sid), count in pending:
                self.sides[index].consumed(sid, count)
                self.unconsumed[(index, sid)] = 0
        else:
            raise AssertionError("the sessions never went quiet")
        for (sender, sid), data in self.sent.items():
            if sid in self.reset:
                continue
            receiver = self.sides[1 - sender]
            assert self.pair.received(receiver, sid) == bytes(data), (sender, sid)
        for index, side in enumerate(self.sides):
            self._check_order(index, side)
        delivered = sum(len(d) for d in self.sent.values())
        event(f"bytes sent: {'none' if not delivered else '<5k' if delivered < 5000 else '>=5k'}")

    def _check_order(self, index: int, side: Session) -> None:
        """Per stream: data only before StreamEnded; StreamClosed last; the peer's end seen."""
        by_stream: dict[int, list[type]] = {}
        for happened in self.pair.events[side]:
            sid = getattr(happened, "stream_id", None)
            if sid is not None:
                by_stream.setdefault(sid, []).append(type(happened))
        for sid, kinds in by_stream.items():
            if ev.StreamEnded in kinds:
                assert ev.DataReceived not in kinds[kinds.index(ev.StreamEnded) :]
            if ev.StreamClosed in kinds:
                assert kinds[-1] is ev.StreamClosed and kinds.count(ev.StreamClosed) == 1
            if sid not in self.reset and (1 - index, sid) in self.ended:
                assert kinds.count(ev.StreamEnded) == 1, (index, sid, kinds)


Interleavings.TestCase.settings = settings(max_examples=100, stateful_step_count=100, deadline=None)
test_interleavings = Interleavings.TestCase
