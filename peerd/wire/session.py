"""
The session layer, sans-IO: frames <-> multiplexed, flow-controlled streams.

A :class:`Session` is fed the bytes that arrive (``receive_data``) and
returns :mod:`events <peerd.wire.events>`; the application calls
``open_stream``, ``send_data``, ``end_stream``, ``reset_stream``,
``consumed`` and ``ping``, and collects the bytes to put on the wire with
``data_to_send``.  No sockets, no reactor, no clock.

Flow control is per stream and credit based: each side announces in its
HELLO how many bytes it will buffer per stream (``window``); a sender never
has more than that outstanding, and the receiver returns credit with WINDOW
frames as the application consumes data.  Output is scheduled control first,
then one frame per stream in turn, so a bulk stream cannot starve the others.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from peerd.wire import events as ev
from peerd.wire.frames import (
    MAX_FRAME_SIZE_LIMIT,
    MIN_FRAME_SIZE,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    encode_frame,
    encode_header,
)
from peerd.wire.messages import PROTOCOL_VERSION, Hello, Open, Reason, Update

_U32 = struct.Struct("!I")
_MAX_WINDOW = 2**31 - 1
_PING_SIZE = 8


class SessionState(Enum):
    """Where the session is in its life."""

    AWAITING_HELLO = "awaiting-hello"
    OPEN = "open"
    GOING_AWAY = "going-away"
    CLOSED = "closed"


@dataclass(eq=False)
class _Stream:
    stream_id: int
    send_window: int
    recv_window: int
    pending: deque = field(default_factory=deque)
    pending_bytes: int = 0
    unacked: int = 0
    end_queued: bool = False
    end_sent: bool = False
    end_received: bool = False


class Session:
    """
    One peer connection's protocol state.

    :param initiator: True on the side that dialed; it numbers its streams
        odd, the other side even.
    :param max_frame_size: the largest payload this side accepts.
    :param window: the per-stream receive window this side grants.
    :param max_streams: how many concurrent streams this side accepts.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        max_frame_size: int = 256 * 1024,
        window: int = 1024 * 1024,
        max_streams: int = 256,
    ) -> None:
        if not MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_frame_size {max_frame_size} out of range")
        self.initiator = initiator
        self.max_frame_size = max_frame_size
        self.window = window
        self.max_streams = max_streams
        self.state = SessionState.AWAITING_HELLO
        self.remote_hello: Hello | None = None
        self._hello_sent = False
        self._decoder = FrameDecoder(max_frame_size, stream_data=True)
        self._next_stream_id = 1 if initiator else 2
        self._streams: dict[int, _Stream] = {}
        self._control: deque[bytes] = deque()
        self._ready: deque[_Stream] = deque()
        self._events: list[ev.Event] = []
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- inputs from the application --------------------------------------

    def send_hello(self, hello: Hello) -> None:
        """Queue our HELLO; it must be the first frame we send."""
        if self._hello_sent:
            raise RuntimeError("HELLO already sent")
        self._hello_sent = True
        self._control.append(encode_frame(FrameType.HELLO, 0, hello.encode()))

    def open_stream(self, provider: str, header: dict | None = None) -> int:
        """Open a stream to ``provider`` on the peer; returns its stream id."""
        self._require_open()
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        assert self.remote_hello is not None
        self._streams[stream_id] = _Stream(stream_id, self.remote_hello.window, self.window)
        self._control.append(
            encode_frame(FrameType.OPEN, stream_id, Open(provider, header or {}).encode())
        )
        return stream_id

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` on a stream; it leaves as the peer's window allows."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end_queued or not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # a snapshot: the caller may reuse its buffer
        was_idle = not stream.pending
        # a view, so cutting it into frames never copies the rest
        stream.pending.append(memoryview(data))
        stream.pending_bytes += len(data)
        if was_idle and stream.send_window > 0:
            self._ready.append(stream)

    def end_stream(self, stream_id: int) -> None:
        """Queue a CLOSE after the stream's buffered data: we send no more."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end_queued:
            return
        stream.end_queued = True
        if not stream.pending:
            self._send_end(stream)

    def reset_stream(self, stream_id: int, code: str, reason: str = "") -> None:
        """Abort a stream at once; buffered data is dropped."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._control.append(
            encode_frame(FrameType.RESET, stream_id, Reason(code, reason).encode())
        )

    def consumed(self, stream_id: int, count: int) -> None:
        """The application has taken ``count`` bytes: return credit to the peer."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end_received or count <= 0:
            return  # count 0 with window 1 would send a zero WINDOW, a protocol error
        stream.unacked += count
        if stream.unacked >= self.window // 2:
            stream.recv_window += stream.unacked
            self._control.append(
                encode_frame(FrameType.WINDOW, stream_id, _U32.pack(stream.unacked))
            )
            stream.unacked = 0

    def ping(self, opaque: bytes) -> None:
        """Queue a PING; the peer answers with a PONG carrying ``opaque`` (8 bytes)."""
        if len(opaque) != _PING_SIZE:
            raise ValueError("ping payload must be 8 bytes")
        self._control.append(encode_frame(FrameType.PING, 0, opaque))

    def send_update(self, listen: list[str]) -> None:
        """Queue an UPDATE: our dialable addresses changed (e.g. a relay reservation)."""
        self._require_open()
        self._control.append(encode_frame(FrameType.UPDATE, 0, Update(listen).encode()))

    def go_away(self, code: str, reason: str = "") -> None:
        """Queue a GOAWAY: the connection is about to be closed, and why."""
        if self.state in (SessionState.GOING_AWAY, SessionState.CLOSED):
            return
        self.state = SessionState.GOING_AWAY
        self._control.append(encode_frame(FrameType.GOAWAY, 0, Reason(code, reason).encode()))

    def pending_bytes(self, stream_id: int) -> int:
        """Bytes queued on a stream but not yet handed to ``data_to_send``."""
        stream = self._streams.get(stream_id)
        return stream.pending_bytes if stream is not None else 0

    def is_open(self, stream_id: int) -> bool:
        """Whether the stream still exists (neither fully closed nor reset)."""
        return stream_id in self._streams

    @property
    def stream_count(self) -> int:
        """Streams currently open."""
        return len(self._streams)

    # -- output ------------------------------------------------------------

    def has_output(self) -> bool:
        """Whether ``data_to_send`` would return anything."""
        return bool(self._control or self._ready)

    def data_to_send(self, budget: int = 4 * 1024 * 1024) -> list[bytes]:
        """
        Bytes to write, as a list of chunks, up to about ``budget`` bytes:
        control frames first, then one DATA frame per ready stream in turn.
        """
        chunks: list[bytes] = []
        size = 0
        while self._control:
            chunk = self._control.popleft()
            chunks.append(chunk)
            size += len(chunk)
        max_frame = self.remote_hello.max_frame_size if self.remote_hello else MIN_FRAME_SIZE
        ready = self._ready
        while ready and size < budget:
            stream = ready.popleft()
            if self._streams.get(stream.stream_id) is not stream:
                continue  # reset meanwhile
            payload = self._take(stream, min(max_frame, stream.send_window))
            stream.send_window -= len(payload)
            chunks.append(encode_header(FrameType.DATA, stream.stream_id, len(payload)))
            chunks.append(payload)
            size += len(payload)
            if stream.pending and stream.send_window > 0:
                ready.append(stream)
            elif not stream.pending and stream.end_queued:
                self._send_end(stream)
                if self._control:
                    chunks.append(self._control.popleft())
        self.bytes_sent += sum(map(len, chunks))  # headers and a trailing CLOSE too
        return chunks

    def _take(self, stream: _Stream, limit: int) -> bytes | memoryview:
        pending = stream.pending
        first = pending[0]
        if len(first) > limit:
            pending[0] = first[limit:]
            stream.pending_bytes -= limit
            return first[:limit]
        parts = []
        taken = 0
        while pending and taken + len(pending[0]) <= limit:
            part = pending.popleft()
            parts.append(part)
            taken += len(part)
        if pending and taken < limit:
            head = pending[0]
            cut = limit - taken
            parts.append(head[:cut])
            pending[0] = head[cut:]
            taken = limit
        stream.pending_bytes -= taken
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _send_end(self, stream: _Stream) -> None:
        stream.end_sent = True
        self._control.append(encode_frame(FrameType.CLOSE, stream.stream_id))
        if stream.end_received:
            del self._streams[stream.stream_id]
            self._events.append(ev.StreamClosed(stream.stream_id))

    # -- input from the wire -------------------------------------------------

    def receive_data(self, data: bytes) -> list[ev.Event]:
        """
        Feed bytes from the wire; return what happened.

        :raises ProtocolError: the peer broke the protocol (send GOAWAY with
            ``error.code`` and drop the connection).
        """
        self.bytes_received += len(data)
        for frame in self._decoder.feed(data):
            self._handle(frame)
        return self.pop_events()

    def pop_events(self) -> list[ev.Event]:
        """Events produced since the last call (including by ``data_to_send``)."""
        events, self._events = self._events, []
        return events

    def _handle(self, frame: Frame) -> None:
        if self.state is SessionState.AWAITING_HELLO:
            if frame.type is FrameType.GOAWAY:  # a refusal may come instead of a HELLO
                self._on_goaway(frame)
                return
            if frame.type is not FrameType.HELLO:
                raise ProtocolError(f"expected HELLO or GOAWAY, got {frame.type.name}")
            self._receive_hello(frame)
            return
        handler = _HANDLERS[frame.type]
        handler(self, frame)

    def _receive_hello(self, frame: Frame) -> None:
        hello = Hello.decode(frame.payload)
        if hello.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {hello.version} (we speak {PROTOCOL_VERSION})",
                "version",
            )
        if not MIN_FRAME_SIZE <= hello.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ProtocolError(f"HELLO max_frame_size {hello.max_frame_size} out of range")
        if not 0 < hello.window <= _MAX_WINDOW:
            raise ProtocolError(f"HELLO window {hello.window} out of range")
        self.remote_hello = hello
        if self.state is SessionState.AWAITING_HELLO:
            self.state = SessionState.OPEN
        self._events.append(ev.HelloReceived(hello))

    def _on_hello(self, frame: Frame) -> None:
        raise ProtocolError("second HELLO")

    def _on_open(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if stream_id == 0 or (stream_id % 2 == 1) == self.initiator:
            raise ProtocolError(f"OPEN with stream id {stream_id} of the wrong parity")
        if stream_id in self._streams:
            raise ProtocolError(f"OPEN for stream {stream_id}, which is already open")
        request = Open.decode(frame.payload)
        if self.state is not SessionState.OPEN:
            self.reset_stream_unknown(stream_id, "shutdown", "the peer is closing the connection")
            return
        if len(self._streams) >= self.max_streams:
            self.reset_stream_unknown(
                stream_id,
                "too-many-streams",
                f"limit of {self.max_streams} streams per connection ([network] max_streams)",
            )
            return
        assert self.remote_hello is not None
        self._streams[stream_id] = _Stream(stream_id, self.remote_hello.window, self.window)
        self._events.append(ev.StreamOpened(stream_id, request.provider, request.header))

    def reset_stream_unknown(self, stream_id: int, code: str, reason: str) -> None:
        """Refuse a stream we never registered."""
        self._control.append(
            encode_frame(FrameType.RESET, stream_id, Reason(code, reason).encode())
        )

    def _stream_for(self, frame: Frame) -> _Stream | None:
        stream = self._streams.get(frame.stream_id)
        if stream is None and frame.stream_id == 0:
            raise ProtocolError(f"{frame.type.name} on stream 0")
        return stream  # None: a stream we reset already; ignore late frames

    def _on_data(self, frame: Frame) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        size = len(frame.payload)
        if stream.end_received:
            raise ProtocolError(f"DATA on stream {stream.stream_id} after its CLOSE")
        if size > stream.recv_window:
            raise ProtocolError(
                f"stream {stream.stream_id} overran its window ({size} > {stream.recv_window})",
                "flow-control",
            )
        stream.recv_window -= size
        if size:
            self._events.append(ev.DataReceived(stream.stream_id, frame.payload))

    def _on_window(self, frame: Frame) -> None:
        stream = self._stream_for(frame)
        if len(frame.payload) != 4:
            raise ProtocolError("WINDOW payload must be 4 bytes")
        if stream is None:
            return
        (increment,) = _U32.unpack(frame.payload)
        if increment == 0 or stream.send_window + increment > _MAX_WINDOW:
            raise ProtocolError(f"bad WINDOW increment {increment} on stream {stream.stream_id}")
        was_blocked = stream.send_window <= 0
        stream.send_window += increment
        if was_blocked and stream.pending:
            self._ready.append(stream)
        self._events.append(ev.WindowOpened(stream.stream_id))

    def _on_close(self, frame: Frame) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        if stream.end_received:
            raise ProtocolError(f"second CLOSE on stream {stream.stream_id}")
        stream.end_received = True
        self._events.append(ev.StreamEnded(stream.stream_id))
        if stream.end_sent:
            del self._streams[stream.stream_id]
            self._events.append(ev.StreamClosed(stream.stream_id))

    def _on_reset(self, frame: Frame) -> None:
        reason = Reason.decode(frame.payload, "RESET")
        if frame.stream_id == 0:
            raise ProtocolError("RESET on stream 0")
        if self._streams.pop(frame.stream_id, None) is not None:
            self._events.append(ev.StreamReset(frame.stream_id, reason.code, reason.reason))

    def _on_ping(self, frame: Frame) -> None:
        if frame.stream_id != 0 or len(frame.payload) != _PING_SIZE:
            raise ProtocolError("PING must be 8 bytes on stream 0")
        self._control.append(encode_frame(FrameType.PONG, 0, frame.payload))

    def _on_pong(self, frame: Frame) -> None:
        if frame.stream_id != 0 or len(frame.payload) != _PING_SIZE:
            raise ProtocolError("PONG must be 8 bytes on stream 0")
        self._events.append(ev.PongReceived(frame.payload))

    def _on_update(self, frame: Frame) -> None:
        if frame.stream_id != 0:
            raise ProtocolError("UPDATE must be on stream 0")
        self._events.append(ev.AddressesUpdated(Update.decode(frame.payload).listen))

    def _on_goaway(self, frame: Frame) -> None:
        reason = Reason.decode(frame.payload, "GOAWAY")
        self.state = SessionState.CLOSED
        self._events.append(ev.GoAwayReceived(reason.code, reason.reason))

    def _require_open(self) -> None:
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"session is {self.state.value}, not open")


_HANDLERS = {
    FrameType.HELLO: Session._on_hello,
    FrameType.OPEN: Session._on_open,
    FrameType.DATA: Session._on_data,
    FrameType.WINDOW: Session._on_window,
    FrameType.CLOSE: Session._on_close,
    FrameType.RESET: Session._on_reset,
    FrameType.PING: Session._on_ping,
    FrameType.PONG: Session._on_pong,
    FrameType.GOAWAY: Session._on_goaway,
    FrameType.UPDATE: Session._on_update,
}
