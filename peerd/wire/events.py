"""What a :class:`peerd.wire.session.Session` reports to the application."""

from __future__ import annotations

from dataclasses import dataclass

from peerd.wire.messages import Hello


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The peer's HELLO arrived; the session is open."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream to ``provider``."""

    stream_id: int
    provider: str
    header: dict


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """We refused a stream the peer tried to open (a limit, or shutting down)."""

    stream_id: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes arrived on a stream; report them back with ``Session.consumed``."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer granted more credit on a stream: a paused sender may go on."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer sent CLOSE: it sends no more on this stream (half-close)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """Both sides have closed the stream; it is gone."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer aborted the stream."""

    stream_id: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The answer to one of our PINGs."""

    opaque: bytes


@dataclass(frozen=True, slots=True)
class AddressesUpdated:
    """The peer announced a new list of dialable addresses (UPDATE)."""

    listen: list[str]


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is closing the connection."""

    code: str
    reason: str


Event = (
    HelloReceived
    | StreamOpened
    | StreamRefused
    | DataReceived
    | WindowOpened
    | StreamEnded
    | StreamClosed
    | StreamReset
    | PongReceived
    | GoAwayReceived
    | AddressesUpdated
)
