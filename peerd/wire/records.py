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
from dataclasses import dataclass

from peerd.wire.bytequeue import ByteQueue
from peerd.wire.frames import ProtocolError
from peerd.wire.messages import pack, unpack_map

RECORD_HEADER = struct.Struct("!II")
MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One message: a header map and an optional raw body."""

    header: dict
    body: bytes = b""

    @property
    def type(self) -> str:
        """The message type, ``header["t"]`` (``""`` if absent)."""
        value = self.header.get("t", "")
        return value if isinstance(value, str) else ""


def encode_record(header: dict, body: bytes = b"") -> list[bytes]:
    """The chunks of one record, for ``writeSequence`` (the body is not copied)."""
    encoded = pack(header)
    if len(encoded) > MAX_HEADER:
        raise ValueError(f"record header of {len(encoded)} bytes exceeds {MAX_HEADER}")
    chunks = [RECORD_HEADER.pack(len(encoded), len(body)), encoded]
    if body:
        chunks.append(body)
    return chunks


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
            body = queue.take(body_len) if body_len else b""
            records.append(Record(header, body))


__all__ = ["MAX_HEADER", "Record", "RecordDecoder", "encode_record"]
