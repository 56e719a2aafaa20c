"""Framing: bytes <-> frames, incremental decoding and its limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.wire.frames import (
    HEADER,
    HEADER_SIZE,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    encode_frame,
    encode_header,
)

MAX = 1024

frames_strategy = st.lists(
    st.builds(
        Frame,
        type=st.sampled_from(FrameType),
        stream_id=st.integers(0, 2**32 - 1),
        payload=st.binary(max_size=MAX),
    ),
    max_size=8,
)


def encode_all(frames: list[Frame]) -> bytes:
    return b"".join(encode_frame(f.type, f.stream_id, f.payload) for f in frames)


def test_header_layout():
    """The header is 10 bytes: length u32, type u8, flags u8, stream id u32, big-endian."""
    assert HEADER_SIZE == 10
    assert encode_header(FrameType.DATA, 0x01020304, 0x0A0B0C0D) == bytes.fromhex(
        "0a0b0c0d020001020304"
    )


def test_encode_frame_is_header_plus_payload():
    """``encode_frame`` is the header for the payload's length followed by the payload."""
    frame = encode_frame(FrameType.PING, 0, b"12345678")
    assert frame == encode_header(FrameType.PING, 0, 8) + b"12345678"


def test_round_trip_single():
    """A frame encoded and fed whole decodes to the same type, stream id and payload."""
    decoder = FrameDecoder(MAX)
    frames = decoder.feed(encode_frame(FrameType.OPEN, 7, b"payload"))
    assert frames == [Frame(FrameType.OPEN, 7, b"payload")]
    assert decoder.buffered == 0


def test_empty_payload_round_trip():
    """A frame with no payload decodes as soon as its header is complete."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(encode_frame(FrameType.CLOSE, 3)) == [Frame(FrameType.CLOSE, 3, b"")]


def test_payload_of_exactly_max_is_accepted():
    """A payload of exactly ``max_payload`` bytes is allowed."""
    decoder = FrameDecoder(MAX)
    payload = b"x" * MAX
    assert decoder.feed(encode_frame(FrameType.DATA, 1, payload)) == [
        Frame(FrameType.DATA, 1, payload)
    ]


@given(frames_strategy)
@settings(max_examples=200, deadline=None)
def test_round_trip_many(frames):
    """Any sequence of frames, encoded back to back and fed at once, decodes unchanged."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(encode_all(frames)) == frames
    assert decoder.buffered == 0


@given(frames_strategy)
@settings(max_examples=100, deadline=None)
def test_byte_by_byte(frames):
    """Feeding the stream one byte at a time yields the same frames in the same order."""
    decoder = FrameDecoder(MAX)
    data = encode_all(frames)
    out: list[Frame] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    assert out == frames
    assert decoder.buffered == 0


@given(frames_strategy, st.data())
@settings(max_examples=200, deadline=None)
def test_random_splits(frames, data):
    """Feeding the stream in arbitrary chunks yields the same frames in the same order."""
    encoded = encode_all(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=20), label="cuts"))
    decoder = FrameDecoder(MAX)
    out: list[Frame] = []
    start = 0
    for cut in [*cuts, len(encoded)]:
        out.extend(decoder.feed(encoded[start:cut]))
        start = cut
    assert out == frames
    assert decoder.buffered == 0


def test_partial_frames_stay_buffered():
    """Bytes of an incomplete frame are held (``buffered``) until the rest arrives."""
    decoder = FrameDecoder(MAX)
    whole = encode_frame(FrameType.DATA, 1, b"hello world")
    assert decoder.feed(whole[:4]) == []
    assert decoder.buffered == 4
    assert decoder.feed(whole[4:HEADER_SIZE]) == []
    assert decoder.buffered == HEADER_SIZE
    assert decoder.feed(whole[HEADER_SIZE:-1]) == []
    assert decoder.buffered == len(whole) - 1
    assert decoder.feed(whole[-1:]) == [Frame(FrameType.DATA, 1, b"hello world")]
    assert decoder.buffered == 0


def test_complete_frame_then_partial():
    """A chunk holding one whole frame and part of the next returns the first, keeps the rest."""
    decoder = FrameDecoder(MAX)
    second = encode_frame(FrameType.DATA, 3, b"abc")
    frames = decoder.feed(encode_frame(FrameType.CLOSE, 1) + second[:5])
    assert frames == [Frame(FrameType.CLOSE, 1, b"")]
    assert decoder.buffered == 5


def test_oversized_length_rejected_from_header_alone():
    """A length above the maximum raises ``frame-too-large`` on the header, before any payload."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(encode_header(FrameType.DATA, 1, MAX + 1))
    assert caught.value.code == "frame-too-large"


def test_hostile_length_costs_nothing():
    """A 4 GiB length is rejected at once, from only the 10 header bytes."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(HEADER.pack(2**32 - 1, FrameType.DATA, 0, 1))
    assert caught.value.code == "frame-too-large"


def test_oversized_after_valid_frame():
    """An oversized header following a valid frame in the same chunk is still rejected."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(FrameType.CLOSE, 1) + encode_header(FrameType.DATA, 1, MAX + 1))


@pytest.mark.parametrize("frame_type", [10, 42, 255])
def test_unknown_type_rejected(frame_type):
    """A frame type outside the known set is a ProtocolError, raised on the header."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(HEADER.pack(5, frame_type, 0, 1))
    assert caught.value.code == "protocol-error"


@pytest.mark.parametrize("flags", [1, 0x80, 0xFF])
def test_nonzero_flags_rejected(flags):
    """Reserved flags must be zero; any set bit is a ProtocolError, raised on the header."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(HEADER.pack(5, FrameType.DATA, flags, 1))
    assert caught.value.code == "protocol-error"


def test_short_header_is_not_judged():
    """Fewer than 10 bytes are only buffered, even if they start an invalid header."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(b"\xff" * (HEADER_SIZE - 1)) == []
    assert decoder.buffered == HEADER_SIZE - 1


def test_protocol_error_default_code():
    """ProtocolError carries the message and defaults its GOAWAY code to ``protocol-error``."""
    error = ProtocolError("boom")
    assert str(error) == "boom"
    assert error.code == "protocol-error"
    assert ProtocolError("x", "version").code == "version"
