"""
:class:`PeerConnection`: one TLS connection to one peer.

Thin glue between a Twisted transport (a ``TLSMemoryBIOProtocol``) and the
sans-IO :class:`peerd.wire.session.Session`: it checks the PeerID the TLS
handshake proved, exchanges HELLOs, turns session events into calls on
:class:`peerd.net.streams.Stream` transports, keeps the connection alive, and
writes only while the transport below is not paused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from peerd.interfaces import IPeerInfo, StreamReset
from peerd.net.streams import Stream
from peerd.peerid import PeerID
from peerd.tls import PeerIdentityError, PeerIDMismatch, check_peer_id, peer_id_of_transport
from peerd.wire import events as ev
from peerd.wire.frames import ProtocolError
from peerd.wire.messages import Hello
from peerd.wire.session import Session

log = Logger()

READ_SIZE = 256 * 1024
WRITE_BATCH = 256 * 1024
"""Bytes handed to the transport between checks of its backpressure: a bigger
batch overshoots the socket buffer, and Twisted re-joins what it holds."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Limits and timers of one connection (from ``[network]``)."""

    keepalive_interval: float = 15.0
    idle_timeout: float = 60.0
    handshake_timeout: float = 10.0
    max_frame_size: int = 256 * 1024
    window: int = 4 * 1024 * 1024
    max_streams: int = 256


class ConnectionState(Enum):
    """Where a connection is in its life."""

    TLS_HANDSHAKE = "tls-handshake"
    HELLO_EXCHANGE = "hello-exchange"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionHost(Protocol):
    """What a connection needs from whoever manages connections."""

    def local_hello(self) -> Hello:
        """Our HELLO (a fresh nonce for each connection)."""

    def admit(self, connection: PeerConnection) -> tuple[str, str] | None:
        """After TLS: None to go on, or ``(code, reason)`` to refuse the peer."""

    def session_ready(self, connection: PeerConnection) -> None:
        """HELLOs exchanged; the connection may carry streams."""

    def session_closed(self, connection: PeerConnection, reason: str) -> None:
        """The connection is gone."""

    def stream_opened(self, stream: Stream) -> None:
        """The peer opened ``stream``: hand it to its provider."""


class RemoteClosed(ConnectionDone):
    """The peer closed the connection with GOAWAY ``code``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code


@implementer(IPeerInfo)
@dataclass
class PeerInfo:
    """A snapshot-like view of a connected peer (see :class:`IPeerInfo`)."""

    peer_id: PeerID
    address: str
    direction: str
    providers: dict[str, str] = field(default_factory=dict)
    listen_addresses: list[str] = field(default_factory=list)
    agent: str = ""
    connected_since: float = 0.0
    relay: PeerID | None = None


@implementer(IHandshakeListener, IPushProducer)
class PeerConnection(TwistedProtocol):
    """The protocol of one peer connection, above TLS."""

    def __init__(
        self,
        host: ConnectionHost,
        clock: IReactorTime,
        settings: ConnectionSettings,
        *,
        initiator: bool,
        local_peer_id: PeerID,
        expected_peer_id: PeerID | None = None,
    ) -> None:
        self.host = host
        self.clock = clock
        self.settings = settings
        self.initiator = initiator
        self.local_peer_id = local_peer_id
        self.expected_peer_id = expected_peer_id
        self.state = ConnectionState.TLS_HANDSHAKE
        self.peer_id: PeerID | None = None
        self.info: PeerInfo = None  # type: ignore[assignment]  # set when the handshake completes
        self.session = Session(
            initiator=initiator,
            max_frame_size=settings.max_frame_size,
            window=settings.window,
            max_streams=settings.max_streams,
        )
        self.ready: defer.Deferred[PeerConnection] = defer.Deferred()
        self.closed: defer.Deferred[str] = defer.Deferred()
        self.close_reason = ""
        self._local_nonce = b""
        self._tls_up = False
        self._streams: dict[int, Stream] = {}
        #: Stream bytes by provider: name -> [received, sent].
        self.provider_bytes: dict[str, list[int]] = {}
        self._drain_watchers: set[Stream] = set()
        self._paused = False
        self._pump_call: Any = None
        self._inbox: list[bytes] = []
        self._inbox_call: Any = None
        self._timeout_call: Any = None
        self._abort_call: Any = None
        self._keepalive: LoopingCall | None = None
        self._last_received = 0.0
        self._ping_sent_at: dict[bytes, float] = {}
        self.rtt: float | None = None
        #: The relay this session runs through (a circuit), or None for a direct one.
        self.via: PeerID | None = None

    # -- Twisted protocol ------------------------------------------------------

    @property
    def remote_address(self) -> str:
        """``host:port`` of the remote transport, or a description of it."""
        if self.via is not None:
            return f"relay {self.via}"
        peer = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is None:
            return str(peer)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def direction(self) -> str:
        """``outbound`` if we dialed, else ``inbound``."""
        return "outbound" if self.initiator else "inbound"

    def connectionMade(self) -> None:
        """Start the handshake timer and follow the transport's backpressure."""
        self._last_received = self.clock.seconds()
        self._timeout_call = self.clock.callLater(
            self.settings.handshake_timeout, self._handshake_timed_out
        )
        self.transport.registerProducer(self, True)
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:  # small control frames (WINDOW, PING) must not wait on Nagle
            no_delay(True)
        tcp = getattr(self.transport, "transport", None)
        if tcp is not None and hasattr(tcp, "bufferSize"):
            tcp.bufferSize = READ_SIZE  # fewer, larger socket reads under bulk transfers

    def handshakeCompleted(self) -> None:
        """TLS is up: check who the peer proved to be, then say HELLO."""
        try:
            self.peer_id = peer_id_of_transport(self.transport)
            check_peer_id(self.expected_peer_id, self.peer_id)
        except PeerIDMismatch as e:
            log.warn(
                "refusing peer at {address}: {error}", address=self.remote_address, error=str(e)
            )
            self._fail_handshake("wrong-peer", str(e))
            return
        except PeerIdentityError as e:
            self._fail_handshake("no-identity", str(e))
            return
        self.info = PeerInfo(self.peer_id, self.remote_address, self.direction)
        self._tls_up = True
        refusal = self.host.admit(self)
        if refusal is not None:
            self.close(*refusal)
            return
        self.state = ConnectionState.HELLO_EXCHANGE
        hello = self.host.local_hello()
        self._local_nonce = hello.nonce
        self.session.send_hello(hello)
        self._schedule_pump()

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the peer, decrypted. TLS hands them over one record (16 KiB)
        at a time; they are gathered and decoded once per reactor turn, so the
        session and stream layers run once per read rather than per record.
        """
        self._last_received = self.clock.seconds()
        if self.state not in (ConnectionState.HELLO_EXCHANGE, ConnectionState.READY):
            return  # refused, closing, or TLS not up: nothing the peer says matters now
        self._inbox.append(data)
        if self._inbox_call is None:
            self._inbox_call = self.clock.callLater(0, self._process_inbox)

    def _process_inbox(self) -> None:
        self._inbox_call = None
        inbox, self._inbox = self._inbox, []
        if not inbox or self.state not in (ConnectionState.HELLO_EXCHANGE, ConnectionState.READY):
            return
        data = inbox[0] if len(inbox) == 1 else b"".join(inbox)
        try:
            events = self.session.receive_data(data)
        except ProtocolError as e:
            log.warn(
                "dropping peer {peer} at {address}: protocol error: {error}",
                peer=self.peer_id,
                address=self.remote_address,
                error=str(e),
            )
            self.close(e.code, str(e))
            return
        for event in events:
            self._dispatch(event)
            if self.state not in (ConnectionState.HELLO_EXCHANGE, ConnectionState.READY):
                return
        if self.session.has_output():
            self._schedule_pump()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        """Tear down streams and timers; tell the host."""
        if self._inbox_call is not None and self._inbox_call.active():
            self._inbox_call.cancel()
            self._process_inbox()  # what arrived before the close still counts
        self.state = ConnectionState.CLOSED
        for call in (self._timeout_call, self._abort_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        if not self.close_reason:
            self.close_reason = _describe(reason)
        for stream in list(self._streams.values()):
            stream.lost(ConnectionLost(f"connection to peer closed: {self.close_reason}"))
        if not self.ready.called:
            self.ready.errback(Failure(ConnectionLost(self.close_reason)))
        self.host.session_closed(self, self.close_reason)
        self.closed.callback(self.close_reason)

    # -- IPushProducer: the transport below tells us when to stop writing ---------

    def pauseProducing(self) -> None:
        """The transport's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport drained."""
        self._paused = False
        self._schedule_pump()

    def stopProducing(self) -> None:
        """The transport is going away."""
        self._paused = True

    # -- used by the manager and by streams ---------------------------------------

    def open_stream(self, provider: str, header: dict, protocol: Any) -> Stream:
        """Open a stream to ``provider`` on the peer and attach ``protocol``."""
        if self.state is not ConnectionState.READY:
            raise ConnectionLost(f"connection is {self.state.value}")
        stream_id = self.session.open_stream(provider, header)
        stream = self._new_stream(stream_id, provider, header)
        stream.attach(protocol)
        self._schedule_pump()
        return stream

    def close(self, code: str = "shutdown", reason: str = "") -> None:
        """Say GOAWAY and close; abort if the peer does not let go in time."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        self.close_reason = f"{code}: {reason}" if reason else code
        if self._tls_up:  # GOAWAY may stand in for HELLO, so a refused peer learns why
            self.session.go_away(code, reason)
            self._write_now()
        self.state = ConnectionState.CLOSING
        if self.transport is not None:
            self._lose_connection()
            self._abort_call = self.clock.callLater(5, self._abort)

    def announce(self, listen: list[str]) -> None:
        """Tell the peer our dialable addresses changed."""
        if self.state is ConnectionState.READY:
            self.session.send_update(listen)
            self._schedule_pump()

    def stream_write(self, stream_id: int, data: bytes) -> None:
        """Queue stream data."""
        self.session.send_data(stream_id, data)
        self._schedule_pump()

    def stream_pending(self, stream_id: int) -> int:
        """Bytes queued on a stream."""
        return self.session.pending_bytes(stream_id)

    def stream_consumed(self, stream_id: int, count: int) -> None:
        """A stream's reader took ``count`` bytes."""
        self.session.consumed(stream_id, count)
        if self.session.has_output():
            self._schedule_pump()

    def end_stream(self, stream_id: int) -> None:
        """Half-close a stream after its queued data."""
        self.session.end_stream(stream_id)
        self._schedule_pump()

    def reset_stream(self, stream_id: int, code: str, reason: str) -> None:
        """Abort a stream."""
        self.session.reset_stream(stream_id, code, reason)
        self._schedule_pump()

    def forget_stream(self, stream_id: int) -> None:
        """A stream is gone."""
        stream = self._streams.pop(stream_id, None)
        self._drain_watchers.discard(stream)  # type: ignore[arg-type]

    def watch_drain(self, stream: Stream) -> None:
        """Call ``stream.drained()`` after output leaves, until it returns False."""
        self._drain_watchers.add(stream)
        self._schedule_pump()

    def count_traffic(self, provider: str, received: int, sent: int) -> None:
        """Account stream bytes to their provider."""
        counts = self.provider_bytes.get(provider)
        if counts is None:
            counts = self.provider_bytes[provider] = [0, 0]
        counts[0] += received
        counts[1] += sent

    @property
    def stream_count(self) -> int:
        """Streams open on this connection."""
        return len(self._streams)

    @property
    def bytes_in(self) -> int:
        """Plaintext bytes received."""
        return self.session.bytes_received

    @property
    def bytes_out(self) -> int:
        """Plaintext bytes sent."""
        return self.session.bytes_sent

    @property
    def connection_nonce(self) -> bytes:
        """The dialer's HELLO nonce: the same on both sides, names this connection."""
        remote = self.session.remote_hello.nonce if self.session.remote_hello else b""
        return self._local_nonce if self.initiator else remote

    # -- internals -----------------------------------------------------------------

    def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.data_received(event.data)
        elif isinstance(event, ev.WindowOpened):
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream in self._drain_watchers:
                self._schedule_pump()
        elif isinstance(event, ev.StreamOpened):
            stream = self._new_stream(event.stream_id, event.provider, event.header)
            self.host.stream_opened(stream)
        elif isinstance(event, ev.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.remote_ended()
        elif isinstance(event, ev.StreamClosed):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.lost(ConnectionDone("stream closed"))
        elif isinstance(event, ev.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.lost(StreamReset(event.code, event.reason))
        elif isinstance(event, ev.StreamRefused):
            log.warn(
                "refused a stream from {peer}: {reason}",
                peer=self.peer_id,
                reason=event.reason,
            )
        elif isinstance(event, ev.HelloReceived):
            self._hello_received(event.hello)
        elif isinstance(event, ev.PongReceived):
            sent = self._ping_sent_at.pop(event.opaque, None)
            if sent is not None:
                self.rtt = self.clock.seconds() - sent
        elif isinstance(event, ev.AddressesUpdated):
            self.info.listen_addresses = list(event.listen)
        elif isinstance(event, ev.GoAwayReceived):
            log.info(
                "peer {peer} is closing the connection: {code} {reason}",
                peer=self.peer_id,
                code=event.code,
                reason=event.reason,
            )
            self.close_reason = (
                f"peer said {event.code}: {event.reason}"
                if event.reason
                else f"peer said {event.code}"
            )
            self.state = ConnectionState.CLOSING
            self._lose_connection()

    def _hello_received(self, hello: Hello) -> None:
        if self.state is not ConnectionState.HELLO_EXCHANGE:
            return
        if hello.peer_id.replace("-", "").upper() != str(self.peer_id).replace("-", ""):
            self.close("wrong-peer", f"HELLO claims {hello.peer_id} but TLS proved {self.peer_id}")
            return
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self.info = PeerInfo(
            peer_id=self.peer_id,  # type: ignore[arg-type]
            address=self.remote_address,
            direction=self.direction,
            providers=dict(hello.providers),
            listen_addresses=list(hello.listen),
            agent=hello.agent,
            connected_since=time.time(),
            relay=self.via,
        )
        self.state = ConnectionState.READY
        self._keepalive = LoopingCall(self._keep_alive)
        self._keepalive.clock = self.clock
        self._keepalive.start(self.settings.keepalive_interval, now=False)
        self.host.session_ready(self)
        if self.state is ConnectionState.READY and not self.ready.called:
            self.ready.callback(self)

    def _new_stream(self, stream_id: int, provider: str, header: dict) -> Stream:
        stream = Stream(self, stream_id, provider, header, high_water=self.settings.window)
        self._streams[stream_id] = stream
        return stream

    def _keep_alive(self) -> None:
        silent_for = self.clock.seconds() - self._last_received
        if silent_for >= self.settings.idle_timeout:
            log.info(
                "peer {peer} silent for {seconds:.0f}s ([network] idle_timeout); closing",
                peer=self.peer_id,
                seconds=silent_for,
            )
            self.close("idle-timeout", f"nothing received for {silent_for:.0f}s")
            return
        if silent_for >= self.settings.keepalive_interval * 0.9:
            opaque = os.urandom(8)
            self._ping_sent_at = {opaque: self.clock.seconds()}
            self.session.ping(opaque)
            self._schedule_pump()

    def _handshake_timed_out(self) -> None:
        log.info(
            "handshake with {address} timed out after {seconds}s ([network] handshake_timeout)",
            address=self.remote_address,
            seconds=self.settings.handshake_timeout,
        )
        self.close_reason = "handshake timed out"
        self._abort()

    def _fail_handshake(self, code: str, reason: str) -> None:
        self.close_reason = f"{code}: {reason}"
        self.state = ConnectionState.CLOSING
        self._abort()

    def _lose_connection(self) -> None:
        # The TLS layer closes only once no producer is registered with it.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _abort(self) -> None:
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.transport.abortConnection()

    def _schedule_pump(self) -> None:
        if self._pump_call is None and self.state is not ConnectionState.CLOSED:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pump_call = None
        if self.state is ConnectionState.CLOSED:
            return
        self._write_now()
        for event in self.session.pop_events():
            self._dispatch(event)
        if self._drain_watchers:
            for stream in list(self._drain_watchers):
                if not stream.drained():
                    self._drain_watchers.discard(stream)

    def _write_now(self) -> None:
        while not self._paused and self.session.has_output():
            self.transport.writeSequence(self.session.data_to_send(WRITE_BATCH))


def _describe(reason: Failure | Exception | type) -> str:
    value = getattr(reason, "value", reason)
    if isinstance(value, type):
        return value.__name__
    text = str(value) or type(value).__name__
    if "Connection was closed cleanly" in text:
        return "closed"
    return text
