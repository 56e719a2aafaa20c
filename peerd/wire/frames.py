"""
Framing: bytes <-> frames.

Every frame is a 10-byte header followed by ``length`` bytes of payload::

    length:u32  type:u8  flags:u8  stream_id:u32      (network byte order)

See ``docs/protocol.rst`` for the meaning of each frame type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from peerd.wire.bytequeue import ByteQueue

HEADER = struct.Struct("!IBBI")
HEADER_SIZE = HEADER.size
MIN_FRAME_SIZE = 16 * 1024
MAX_FRAME_SIZE_LIMIT = 16 * 1024 * 1024


class FrameType(IntEnum):
    """The kinds of frame on the wire."""

    HELLO = 0
    OPEN = 1
    DATA = 2
    WINDOW = 3
    CLOSE = 4
    RESET = 5
    PING = 6
    PONG = 7
    GOAWAY = 8
    UPDATE = 9


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)
_FRAME_TYPES = {int(t): t for t in FrameType}


class ProtocolError(Exception):
    """
    The remote broke the protocol; the connection must be dropped.

    ``code`` is the GOAWAY code to send before dropping.
    """

    def __init__(self, message: str, code: str = "protocol-error") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    stream_id: int
    payload: bytes
    flags: int = 0


def encode_header(frame_type: FrameType, stream_id: int, length: int, flags: int = 0) -> bytes:
    """The 10-byte header for a frame whose payload is ``length`` bytes."""
    return HEADER.pack(length, frame_type, flags, stream_id)


def encode_frame(
    frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0
) -> bytes:
    """A whole frame as one bytes object."""
    return HEADER.pack(len(payload), frame_type, flags, stream_id) + payload


class FrameDecoder:
    """
    Incremental decoder: feed it bytes as they arrive, get whole frames.

    A frame longer than ``max_payload``, an unknown type or non-zero flags
    raise :class:`ProtocolError` before the payload is buffered, so a
    hostile length costs nothing.  Incoming chunks are kept as they are and
    joined once per frame, so each payload byte is copied at most once.

    With ``stream_data``, a DATA frame's payload is handed out in pieces as
    it arrives (several DATA frames with the same stream id, adding up to
    the payload), without being joined at all.
    """

    def __init__(self, max_payload: int, *, stream_data: bool = False) -> None:
        self.max_payload = max_payload
        self.stream_data = stream_data
        self._queue = ByteQueue()
        self._data_left = 0  # with stream_data: payload bytes of the current DATA frame to come
        self._data_stream = 0
        self._header: tuple[int, int, int] | None = None  # (length, type, stream_id)

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (a parsed header included)."""
        return len(self._queue) + (HEADER_SIZE if self._header is not None else 0)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completes, in order."""
        queue = self._queue
        queue.append(data)
        frames: list[Frame] = []
        while True:
            if self._data_left:
                piece = queue.take_upto(self._data_left)
                if not piece:
                    return frames
                self._data_left -= len(piece)
                frames.append(Frame(FrameType.DATA, self._data_stream, piece))
                continue
            header = self._header
            if header is None:
                if len(queue) < HEADER_SIZE:
                    return frames
                header = self._header = self._parse_header(queue.take(HEADER_SIZE))
            length, frame_type, stream_id = header
            if self.stream_data and frame_type == FrameType.DATA and length:
                self._header = None
                self._data_left, self._data_stream = length, stream_id
                continue
            if len(queue) < length:
                return frames
            self._header = None
            payload = queue.take(length) if length else b""
            frames.append(Frame(_FRAME_TYPES[frame_type], stream_id, payload))

    def _parse_header(self, raw: bytes) -> tuple[int, int, int]:
        length, frame_type, flags, stream_id = HEADER.unpack(raw)
        if length > self.max_payload:
            raise ProtocolError(
                f"frame of {length} bytes exceeds the maximum of {self.max_payload} "
                "([network] max_frame_size)",
                "frame-too-large",
            )
        if frame_type not in _KNOWN_TYPES:
            raise ProtocolError(f"unknown frame type {frame_type}")
        if flags:
            raise ProtocolError(
                f"reserved flags {flags:#x} set on a {FrameType(frame_type).name} frame"
            )
        return length, frame_type, stream_id
