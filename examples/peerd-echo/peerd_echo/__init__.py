"""
peerd-echo: an example resource provider that echoes every byte back.

Three small pieces:

* :class:`EchoFactory` is the plugin (``peerd/plugins/peerd_echo_plugin.py``
  holds one instance); it declares the name, version and config schema and
  builds the provider.
* :class:`EchoProvider` serves incoming streams with an
  :class:`EchoProtocol` each and mounts the control routes ``POST ping`` and
  ``GET status``.
* :class:`EchoRequest` is the client side of ``ping``: it writes a message,
  half-closes and collects the echo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from peerd.config import ConfigOption, duration_between, format_size, size_between
from peerd.control.router import ApiError, ApiRequest
from peerd.interfaces import (
    INode,
    IResourceProvider,
    IResourceProviderFactory,
    IStream,
    StreamReset,
)
from peerd.peerid import InvalidPeerID, PeerID

__version__ = "1.0.0"

NAME = "echo"
PROTOCOL_VERSION = "1"


def _size(count: int) -> str:
    """``64KiB``, or ``8 bytes`` for a count with no binary unit."""
    text = format_size(count)
    return f"{text} bytes" if text.isdigit() else text


class EchoFailed(Exception):
    """A ping got no complete echo; the message says why."""


@dataclass
class EchoCounters:
    """What the provider has done since it started."""

    streams_served: int = 0
    streams_active: int = 0
    bytes_echoed: int = 0
    streams_refused: int = 0
    pings_sent: int = 0


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Serves one incoming stream: writes back every byte it reads, and
    half-closes once the peer has half-closed and the echo is queued.

    The stream is registered as its own producer, so when the peer does not
    read its echo fast enough (our writes queue up past the stream's window)
    the stream stops reading, and the peer's window to us closes in turn.
    A stream that sends more than ``limit`` bytes is reset.
    """

    def __init__(self, counters: EchoCounters, limit: int) -> None:
        self._counters = counters
        self._limit = limit
        self._received = 0

    def connectionMade(self) -> None:
        """Follow the stream's backpressure: pause reading while writes queue up."""
        self._counters.streams_served += 1
        self._counters.streams_active += 1
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        """Echo ``data``, unless the stream went over the limit."""
        self._received += len(data)
        if self._received > self._limit:
            self._counters.streams_refused += 1
            self.transport.reset(
                f"echo streams are limited to {_size(self._limit)} "
                "([provider:echo] max_message_size)"
            )
            return
        self.transport.write(data)
        self._counters.bytes_echoed += len(data)

    def readConnectionLost(self) -> None:
        """The peer is done sending: end our side after the queued echo."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Nothing to do: we only write what we read."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The stream is gone (closed, reset, or the connection died)."""
        self._counters.streams_active -= 1


@implementer(IHalfCloseableProtocol)
class EchoRequest(Protocol):
    """
    The client side of a ping: write ``message``, half-close, collect the
    echo. :attr:`done` fires with the echoed bytes once the peer ends its
    side, or fails with :class:`EchoFailed` (reset, lost connection, an echo
    over ``limit`` bytes, or nothing within ``timeout`` seconds).
    """

    def __init__(self, message: bytes, limit: int, clock: Any, timeout: float) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._message = message
        self._limit = limit
        self._clock = clock
        self._timeout = timeout
        self._timer: Any = None
        self._chunks: list[bytes] = []
        self._size = 0

    def connectionMade(self) -> None:
        """Send the message and end our side at once."""
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        self.transport.write(self._message)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Collect the echo, up to ``limit`` bytes."""
        self._size += len(data)
        if self._size > self._limit:
            self._finish(EchoFailed(f"echo is larger than {_size(self._limit)}"))
            self.transport.abortConnection()
            return
        self._chunks.append(data)

    def readConnectionLost(self) -> None:
        """The peer ended its side: the echo is complete."""
        self._finish(b"".join(self._chunks))

    def writeConnectionLost(self) -> None:
        """Nothing to do: we half-closed on purpose."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Without a complete echo, the ping failed."""
        value = reason.value if reason is not None else None
        if isinstance(value, StreamReset):
            why = f"the peer reset the stream: {value.reason or value.code}"
        else:
            why = f"the stream ended before the echo did: {value}"
        self._finish(EchoFailed(why))

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(
            EchoFailed(f"no echo within {self._timeout:g}s ([provider:echo] ping_timeout)")
        )
        self.transport.abortConnection()

    def _finish(self, result: bytes | Exception) -> None:
        if self.done.called:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if isinstance(result, Exception):
            self.done.errback(Failure(result))
        else:
            self.done.callback(result)


@implementer(IResourceProvider)
class EchoProvider:
    """Echoes incoming streams; pings peers through its control routes."""

    name = NAME

    def __init__(self, node: INode, max_message_size: int, ping_timeout: float) -> None:
        self._node = node
        self._max_message_size = max_message_size
        self._ping_timeout = ping_timeout
        self._counters = EchoCounters()
        self._routes_mounted = False

    def start(self) -> None:
        """Mount the control routes (once)."""
        if not self._routes_mounted:
            self._node.control.route("POST", "ping", self.api_ping)
            self._node.control.route("GET", "status", self.api_status)
            self._routes_mounted = True

    def stop(self) -> None:
        """Nothing to release: streams end with their connections."""

    def stream_opened(self, stream: IStream) -> None:
        """A peer wants an echo: serve it."""
        stream.attach(EchoProtocol(self._counters, self._max_message_size))

    def status(self) -> dict:
        """Counters and the configured limit."""
        return {
            "streams_served": self._counters.streams_served,
            "streams_active": self._counters.streams_active,
            "streams_refused": self._counters.streams_refused,
            "bytes_echoed": self._counters.bytes_echoed,
            "pings_sent": self._counters.pings_sent,
            "max_message_size": self._max_message_size,
        }

    # -- control API -------------------------------------------------------------

    def api_status(self, request: ApiRequest) -> dict:
        """``GET /api/v1/providers/echo/status``."""
        return self.status()

    async def api_ping(self, request: ApiRequest) -> dict:
        """
        ``POST /api/v1/providers/echo/ping`` with ``{"peer": PEERID,
        "message": TEXT}``: answers ``{"peer", "echo", "rtt_ms"}``.
        """
        body = request.json()
        peer_text, message = body.get("peer"), body.get("message")
        if not isinstance(peer_text, str):
            raise ApiError(400, 'field "peer" (a PeerID string) is required')
        if not isinstance(message, str):
            raise ApiError(400, 'field "message" (a string) is required')
        try:
            peer_id = PeerID.parse(peer_text)
        except InvalidPeerID as e:
            raise ApiError(400, str(e)) from None
        data = message.encode("utf-8")
        if len(data) > self._max_message_size:
            raise ApiError(
                400,
                f"message is {len(data)} bytes; the limit is "
                f"{_size(self._max_message_size)} ([provider:echo] max_message_size)",
            )
        if self._node.peer(peer_id) is None:
            raise ApiError(404, f"peer {peer_id} is not connected")
        clock = self._node.clock
        request_protocol = EchoRequest(data, self._max_message_size, clock, self._ping_timeout)
        started = clock.seconds()
        self._counters.pings_sent += 1
        try:
            await self._node.open_stream(peer_id, {}, request_protocol)
        except Exception as e:
            raise ApiError(502, f"cannot open an echo stream to {peer_id}: {e}") from None
        try:
            echoed = await request_protocol.done
        except EchoFailed as e:
            raise ApiError(502, f"ping to {peer_id} failed: {e}") from None
        rtt_ms = (clock.seconds() - started) * 1000
        return {
            "peer": str(peer_id),
            "echo": echoed.decode("utf-8", errors="replace"),
            "rtt_ms": round(rtt_ms, 3),
        }


@implementer(IPlugin, IResourceProviderFactory)
class EchoFactory:
    """The ``echo`` provider plugin."""

    name = NAME
    version = PROTOCOL_VERSION
    enabled_by_default = True
    config_schema = {
        "max_message_size": ConfigOption(
            parse=size_between(1, 1 << 30),
            default="64KiB",
            doc="The most bytes one echo stream may carry, each way; "
            "a longer stream is reset, and a longer ping reply is refused.",
            expected="a size like 64KiB, from 1 byte to 1GiB",
        ),
        "ping_timeout": ConfigOption(
            parse=duration_between(0.001, 3600),
            default="30s",
            doc="How long a ping waits for the complete echo.",
            expected="a duration like 30s, from 1ms to 1h",
        ),
    }

    def build(self, node: INode, config: dict) -> EchoProvider:
        """An :class:`EchoProvider` with the parsed ``[provider:echo]`` options."""
        return EchoProvider(node, config["max_message_size"], config["ping_timeout"])

    def __repr__(self) -> str:
        return f"<EchoFactory {self.name}/{self.version}>"
