"""
Records: messages on a stream, sans-IO.

A stream is a byte pipe; providers that exchange messages frame them as
records::

    header_len:u32  body_len:u32  header (MessagePack map)  body (raw bytes)

The header carries the message (its type under ``"t"``); the body carries
bulk bytes (a file block, a share) without MessagePack encoding or an extra
copy.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from peerd.wire.bytequeue import ByteQueue
from peerd.wire.frames import ProtocolError
from peerd.wire.messages import pack, unpack_map

RECORD_HEADER = struct.Struct("!II")
MAX_HEADER = 64 * 1024


class Record:
    """
    One message: a header map and an optional raw body.

    A decoded body arrives in pieces (as the transport delivered it);
    :attr:`parts` hands them out as they are, for a consumer that can hash
    or write a list of buffers, and :attr:`body` joins them once, on first
    use.
    """

    __slots__ = ("header", "_body", "_parts")

    def __init__(self, header: dict, body: bytes = b"", parts: Sequence[bytes] = ()) -> None:
        self.header = header
        self._body: bytes | None = body if not parts else None
        self._parts = tuple(parts) if parts else ((body,) if body else ())

    @property
    def body(self) -> bytes:
        """The body as one bytes object."""
        if self._body is None:
            self._body = b"".join(self._parts)
        return self._body

    @property
    def parts(self) -> tuple[bytes, ...]:
        """The body as a tuple of pieces, in order (empty for no body)."""
        return self._parts

    @property
    def body_length(self) -> int:
        """The body's length in bytes, without joining it."""
        return sum(map(len, self._parts))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.header == other.header and self.body == other.body

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Record({self.header!r}, <{self.body_length} bytes>)"

    @property
    def type(self) -> str:
        """The message type, ``header["t"]`` (``""`` if absent)."""
        value = self.header.get("t", "")
        return value if isinstance(value, str) else ""


def encode_record(header: dict, body: bytes = b"") -> list[bytes]:
    """The chunks of one record, for ``writeSequence`` (the body is not copied)."""
    chunks = encode_record_head(header, len(body))
    if body:
        chunks.append(body)
    return chunks


def encode_record_head(header: dict, body_length: int) -> list[bytes]:
    """
    The chunks of a record up to its body, for a body of ``body_length``
    bytes that the caller writes next (possibly in parts, over time).
    """
    encoded = pack(header)
    if len(encoded) > MAX_HEADER:
        raise ValueError(f"record header of {len(encoded)} bytes exceeds {MAX_HEADER}")
    return [RECORD_HEADER.pack(len(encoded), body_length), encoded]


class RecordDecoder:
    """Feed stream bytes, get :class:`Record` objects; oversize records are a ProtocolError."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._queue = ByteQueue()
        self._lengths: tuple[int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a record."""
        return len(self._queue)

    def feed(self, data: bytes) -> list[Record]:
        """Consume ``data``; return the records it completes."""
        queue = self._queue
        queue.append(data)
        records: list[Record] = []
        while True:
            if self._lengths is None:
                if len(queue) < RECORD_HEADER.size:
                    return records
                header_len, body_len = RECORD_HEADER.unpack(queue.take(RECORD_HEADER.size))
                if header_len > MAX_HEADER or body_len > self.max_body:
                    raise ProtocolError(
                        f"record of {header_len}+{body_len} bytes exceeds the limits "
                        f"({MAX_HEADER}+{self.max_body})"
                    )
                self._lengths = (header_len, body_len)
            header_len, body_len = self._lengths
            if len(queue) < header_len + body_len:
                return records
            self._lengths = None
            header = unpack_map(queue.take(header_len), "record header")
            parts = queue.take_parts(body_len) if body_len else ()
            records.append(Record(header, parts=parts))


__all__ = ["MAX_HEADER", "Record", "RecordDecoder", "encode_record", "encode_record_head"]
