"""
:class:`Stream`: one multiplexed stream presented as a Twisted transport.

The stream buffers what the peer sends while its reader is paused (bounded
by the window it granted) and pauses its writer's producer while too much is
queued for the peer, so memory stays bounded in both directions.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from peerd.interfaces import IPeerInfo, IStream, StreamReset

log = Logger()


class StreamCarrier(Protocol):
    """
    What a :class:`Stream` needs of the connection that carries it
    (:class:`~peerd.net.connection.PeerConnection` is one).
    """

    peer_id: Any
    local_peer_id: Any

    @property
    def info(self) -> IPeerInfo: ...

    def stream_write(self, stream_id: int, data: bytes) -> None: ...

    def stream_pending(self, stream_id: int) -> int: ...

    def stream_consumed(self, stream_id: int, count: int) -> None: ...

    def end_stream(self, stream_id: int) -> None: ...

    def reset_stream(self, stream_id: int, code: str, reason: str) -> None: ...

    def forget_stream(self, stream_id: int) -> None: ...

    def watch_drain(self, stream: Stream) -> None: ...

    def count_traffic(self, provider: str, received: int, sent: int) -> None: ...


@implementer(IAddress)
class StreamAddress:
    """The address of one end of a stream: a PeerID and a stream number."""

    def __init__(self, peer_id: object, stream_id: int) -> None:
        self.peer_id = peer_id
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"StreamAddress({self.peer_id}, {self.stream_id})"


@implementer(IStream)
class Stream:
    """A flow-controlled byte stream to one provider on one peer."""

    def __init__(
        self,
        connection: StreamCarrier,
        stream_id: int,
        provider: str,
        header: dict,
        high_water: int,
    ) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.provider = provider
        self.header = header
        self.protocol: Any = None
        self._buffers_ok = False
        self.connected = True
        self.disconnecting = False
        self._high_water = high_water
        self._received: deque[bytes] = deque()
        self._reading_paused = False
        self._delivering = False
        self._producer: Any = None
        self._streaming = True
        self._producer_paused = False
        self._remote_ended = False
        self._lost = False
        #: Why the stream ended (a :class:`StreamReset` carries the code), once it has.
        self.lost_reason: Exception | None = None

    @property
    def peer(self) -> IPeerInfo:
        """The peer at the other end."""
        return self._connection.info

    # -- IStream ---------------------------------------------------------

    def attach(self, protocol: Any) -> None:
        """
        Connect ``protocol``; deliver anything that arrived before. Its
        ``dataReceived`` gets ``bytes``, or, if the protocol sets
        ``accepts_buffers = True``, possibly ``memoryview`` pieces of the
        received data (valid for as long as it keeps them; saves a copy).
        """
        self.protocol = protocol
        self._buffers_ok = bool(getattr(protocol, "accepts_buffers", False))
        self._guard(protocol.makeConnection, self)
        self._flush_received()
        if self._remote_ended and not self._lost:
            self._deliver_end()

    def reset(self, reason: str, code: str = "cancelled") -> None:
        """Abort the stream, telling the peer ``code`` and ``reason`` (see :meth:`IStream.reset`)."""
        if self._lost:
            return
        self._connection.reset_stream(self.stream_id, code, reason)
        self.lost(StreamReset(code, reason))

    # -- ITransport ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer; never blocks."""
        if self._lost or self.disconnecting or not data:
            return
        self._connection.stream_write(self.stream_id, data)
        self._connection.count_traffic(self.provider, 0, len(data))
        if (
            self._producer is not None
            and self._streaming
            and not self._producer_paused
            and self._connection.stream_pending(self.stream_id) >= self._high_water
        ):
            self._producer_paused = True
            self._connection.watch_drain(self)
            self._producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        """Queue several chunks (each as it is: no joining copy)."""
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        """Send end-of-stream once buffered data has left."""
        if self._lost or self.disconnecting:
            return
        self.disconnecting = True
        self._connection.end_stream(self.stream_id)

    def abortConnection(self) -> None:
        """Reset the stream at once."""
        self.reset("aborted by the application")

    def getPeer(self) -> StreamAddress:
        """The remote end."""
        return StreamAddress(self._connection.peer_id, self.stream_id)

    def getHost(self) -> StreamAddress:
        """The local end."""
        return StreamAddress(self._connection.local_peer_id, self.stream_id)

    # -- IConsumer ------------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register a producer; it is paused while too much is queued."""
        if self._producer is not None:
            raise RuntimeError("a producer is already registered on this stream")
        self._producer = producer
        self._streaming = streaming
        self._producer_paused = False
        if not streaming:
            self._connection.watch_drain(self)

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self._producer = None

    # -- IPushProducer (the reading side) -------------------------------------

    def pauseProducing(self) -> None:
        """Stop delivering data; the peer stops once the window is used up."""
        self._reading_paused = True

    def resumeProducing(self) -> None:
        """Deliver what was held back and grant the peer window again."""
        self._reading_paused = False
        self._flush_received()
        if self._remote_ended and not self._received and not self._lost:
            self._deliver_end()

    def stopProducing(self) -> None:
        """Abort the stream."""
        self.reset("stopped by the application")

    # -- called by the connection -----------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer."""
        if self.protocol is not None:  # only streams a provider took (bounded names)
            self._connection.count_traffic(self.provider, len(data), 0)
        self._received.append(data)
        self._flush_received()

    def remote_ended(self) -> None:
        """The peer sent CLOSE."""
        self._remote_ended = True
        if not self._received and self.protocol is not None:
            self._deliver_end()

    def drained(self) -> bool:
        """
        Queued output fell low: resume the producer. Returns True while the
        stream still wants to hear of the next drain.
        """
        if self._producer is None or self._lost:
            return False
        if self._connection.stream_pending(self.stream_id) >= self._high_water // 2:
            return True
        if not self._streaming:
            self._guard(self._producer.resumeProducing)
            return self._producer is not None
        if self._producer_paused:
            self._producer_paused = False
            self._guard(self._producer.resumeProducing)
            # Resuming may have filled the queue and paused the producer again:
            # keep watching, or it would never hear of the next drain.
            return self._producer is not None and self._producer_paused
        return False

    def lost(self, reason: Exception) -> None:
        """The stream is gone (closed by both sides, reset, or the connection died)."""
        if self._lost:
            return
        self._lost = True
        self.lost_reason = reason
        self.connected = False
        self._connection.forget_stream(self.stream_id)
        producer, self._producer = self._producer, None
        if producer is not None:
            self._guard(producer.stopProducing)
        if self.protocol is not None:
            try:
                self.protocol.connectionLost(Failure(reason))
            except Exception:
                log.failure(
                    "provider {provider} failed handling stream end", provider=self.provider
                )

    # -- internals ---------------------------------------------------------

    def _flush_received(self) -> None:
        if self._delivering or self.protocol is None:
            return
        self._delivering = True
        try:
            while self._received and not self._reading_paused and not self._lost:
                data = self._received.popleft()
                self._connection.stream_consumed(self.stream_id, len(data))
                if type(data) is memoryview and not self._buffers_ok:
                    data = bytes(data)
                self._guard(self.protocol.dataReceived, data)
        finally:
            self._delivering = False

    def _deliver_end(self) -> None:
        if self._reading_paused:
            return
        half_closeable = IHalfCloseableProtocol(self.protocol, None)
        if half_closeable is not None:
            self._guard(half_closeable.readConnectionLost)
        else:
            self.loseConnection()

    def _guard(self, function: Any, *args: Any) -> None:
        """Run provider code; an exception resets this stream only."""
        try:
            function(*args)
        except Exception as e:
            log.failure(
                "provider {provider} raised on stream {stream_id}; resetting the stream",
                provider=self.provider,
                stream_id=self.stream_id,
            )
            self.reset(f"{type(e).__name__} in provider {self.provider}", "provider-error")


def route_to_provider(providers: Any, stream: Stream) -> None:
    """
    Hand a stream the peer opened to its provider (``providers`` maps names
    to :class:`~peerd.interfaces.IResourceProvider`). An unknown provider, a
    provider that raises, or one that attaches no protocol resets the stream
    with ``unknown-provider``, ``provider-error`` or ``refused``.
    """
    provider = providers.get(stream.provider)
    if provider is None:
        stream.reset(f"this peer has no provider {stream.provider!r}", "unknown-provider")
        return
    try:
        provider.stream_opened(stream)
    except Exception as e:
        log.failure("provider {name} raised on an incoming stream", name=stream.provider)
        stream.reset(f"{type(e).__name__} in provider {stream.provider}", "provider-error")
        return
    if stream.protocol is None:
        stream.reset("the provider did not accept the stream", "refused")
