"""Records on a stream, and the byte queue under them: round trips under any split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.wire.bytequeue import ByteQueue
from peerd.wire.frames import ProtocolError
from peerd.wire.records import MAX_HEADER, Record, RecordDecoder, encode_record

headers = st.dictionaries(
    st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10), max_size=4
)
records = st.lists(st.tuples(headers, st.binary(max_size=3000)), min_size=1, max_size=6)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=150, deadline=None)
@given(records, st.lists(st.integers(min_value=0), max_size=40))
def test_records_round_trip_under_any_split(messages, cuts):
    """Whatever the chunking, the decoder yields the records sent, bodies intact."""
    wire = b"".join(b"".join(encode_record(h, b)) for h, b in messages)
    decoder = RecordDecoder(max_body=4096)
    got: list[Record] = []
    for piece in split(wire, cuts):
        got.extend(decoder.feed(piece))
    assert [(r.header, r.body) for r in got] == messages
    assert [b"".join(r.parts) for r in got] == [b for _h, b in messages]
    assert [r.body_length for r in got] == [len(b) for _h, b in messages]
    assert decoder.buffered == 0


def test_body_parts_are_the_received_chunks_not_a_copy():
    """A body spanning whole received chunks is handed out as those very objects."""
    body_chunks = [b"a" * 1000, b"b" * 1000, b"c" * 1000]
    head = b"".join(encode_record({"t": "block"}, b"x" * 3000)[:2])
    decoder = RecordDecoder(max_body=1 << 20)
    assert decoder.feed(head) == []
    assert decoder.feed(body_chunks[0]) == []
    assert decoder.feed(body_chunks[1]) == []
    (record,) = decoder.feed(body_chunks[2])
    assert all(a is b for a, b in zip(record.parts, body_chunks, strict=True))
    assert record.body == b"".join(body_chunks)
    assert record.type == "block"


def test_record_equality_and_no_body():
    assert Record({"t": "x"}, b"ab") == Record({"t": "x"}, parts=[b"a", b"b"])
    assert Record({"t": "x"}) != Record({"t": "x"}, b"a")
    assert Record({"t": "x"}).parts == ()
    assert Record({"t": 5}).type == ""


def test_oversize_records_are_protocol_errors():
    decoder = RecordDecoder(max_body=10)
    with pytest.raises(ProtocolError, match="exceeds the limits"):
        decoder.feed(b"".join(encode_record({}, b"x" * 11)))
    with pytest.raises(ValueError, match="exceeds"):
        encode_record({"k": "x" * (MAX_HEADER + 1)})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=10), st.lists(st.integers(0, 60), max_size=10))
def test_byte_queue_take_parts_and_take_upto(chunks, asks):
    """Pieces come out in order and add up to exactly what was asked."""
    queue = ByteQueue()
    for c in chunks:
        queue.append(c)
    stream = b"".join(chunks)
    out = b""
    for i, ask in enumerate(asks):
        ask = min(ask, len(queue))
        if i % 2:
            piece = queue.take_upto(ask)
            assert len(piece) <= ask
            out += piece
        else:
            parts = queue.take_parts(ask)
            assert sum(map(len, parts)) == ask and all(parts)
            out += b"".join(parts)
        assert len(queue) == len(stream) - len(out)
    assert stream.startswith(out)
    with pytest.raises(ValueError, match="bytes queued"):
        queue.take(len(queue) + 1)


def test_cut_pieces_are_views_not_copies():
    """Pieces cut from a chunk share its memory; take() still returns bytes."""
    queue = ByteQueue()
    chunk = b"0123456789"
    queue.append(chunk)
    head = queue.take_upto(3)
    assert isinstance(head, memoryview) and head.obj is chunk and bytes(head) == b"012"
    (middle,) = queue.take_parts(4)
    assert isinstance(middle, memoryview) and middle.obj is chunk and bytes(middle) == b"3456"
    rest = queue.take(3)
    assert type(rest) is bytes and rest == b"789"
