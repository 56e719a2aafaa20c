"""PeerConnection end to end: real mutual TLS between two managers, in memory."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from peerd.interfaces import IPeerInfo, IStream, StreamReset
from peerd.net.connection import ConnectionSettings, ConnectionState
from peerd.peerid import PeerAddress
from peerd.testing import MemoryNetwork, RecordingProvider, StreamRecorder


def _results(d):
    """Collect a Deferred's outcome in a list (empty while it has not fired)."""
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def net(tmp_path) -> MemoryNetwork:
    return MemoryNetwork(data_dir=tmp_path)


@pytest.fixture
def pair(net):
    """A server peer offering ``echo`` and ``sink`` and a client peer, connected."""
    echo = RecordingProvider("echo", echo=True)
    sink = RecordingProvider("sink")
    server = net.add_peer({"echo": echo, "sink": sink})
    client = net.add_peer()
    net.connect(client, server)
    net.flush()
    return client, server, echo, sink


def test_both_sides_get_sessions_with_peer_ids_and_providers(net):
    """After TLS and HELLO each side has a session naming the other's PeerID and providers."""
    server = net.add_peer({"echo": RecordingProvider("echo")})
    client = net.add_peer()
    connected = _results(net.connect(client, server))
    net.flush()

    outbound, inbound = client.session(server), server.session(client)
    assert connected == [outbound]
    assert outbound.state is ConnectionState.READY and inbound.state is ConnectionState.READY
    assert outbound.peer_id == server.peer_id and inbound.peer_id == client.peer_id
    assert outbound.info.providers == {"echo": "1.0"}
    assert inbound.info.providers == {}
    assert (outbound.direction, inbound.direction) == ("outbound", "inbound")
    assert inbound.info.listen_addresses == [str(client.address)]
    assert verifyObject(IPeerInfo, outbound.info)


def test_pinned_dial_to_the_wrong_peer_is_aborted_and_logged(net):
    """Dialing PEERID@addr where another peer answers aborts and logs expected/got."""
    server, client, impostor_id = net.add_peer(), net.add_peer(), net.add_peer().peer_id
    address = PeerAddress(server.address.host, server.address.port, impostor_id)
    with capturedLogs() as events:
        outcome = _results(client.manager.connect(address))
        net.flush()

    assert outcome[0].check(ConnectionLost)
    assert client.manager.sessions == {} and server.manager.sessions == {}
    messages = [formatEvent(e) for e in events]
    assert any(f"expected peer {impostor_id}, got {server.peer_id}" in m for m in messages)


def test_stream_carries_bytes_both_ways(pair, net):
    """Bytes written on a stream reach the provider, and its answer comes back."""
    client, server, echo, _ = pair
    stream = client.open_stream(server, "echo", header={"hello": "there"})
    stream.write(b"ping")
    net.flush()
    assert verifyObject(IStream, stream)
    assert echo.streams[0].header == {"hello": "there"}
    assert echo.protocols[0].received == b"ping"
    assert stream.protocol.received == b"ping"
    assert echo.streams[0].peer.peer_id == client.peer_id


def test_half_close_reaches_a_half_closeable_protocol(pair, net):
    """loseConnection on one side calls readConnectionLost on the other, which may still write."""
    client, server, _, sink = pair
    stream = client.open_stream(server, "sink")
    stream.write(b"request")
    stream.loseConnection()
    net.flush()
    remote = sink.protocols[0]
    assert remote.received == b"request" and remote.ended and remote.lost is None

    remote.transport.write(b"late answer")
    remote.transport.loseConnection()
    net.flush()
    assert stream.protocol.received == b"late answer"
    assert stream.protocol.ended
    assert remote.lost.check(ConnectionDone) and stream.protocol.lost.check(ConnectionDone)


class PlainRecorder(Protocol):
    """Not half-closeable: records data and loss."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost = reason


def test_half_close_closes_a_stream_whose_protocol_is_not_half_closeable(net):
    """A peer's end of stream closes the stream when the protocol cannot half-close."""
    provider = RecordingProvider("plain", protocol_factory=PlainRecorder)
    server, client = net.add_peer({"plain": provider}), net.add_peer()
    net.connect(client, server)
    net.flush()
    stream = client.open_stream(server, "plain")
    stream.write(b"all of it")
    stream.loseConnection()
    net.flush()
    remote = provider.protocols[0]
    assert remote.received == b"all of it"
    assert remote.lost is not None and remote.lost.check(ConnectionDone)
    assert stream.protocol.lost is not None


class ChunkProducer:
    """A streaming producer writing ``data`` to a stream in chunks, recording pauses."""

    def __init__(self, stream, data: bytes, chunk: int) -> None:
        self.stream, self.data, self.chunk = stream, data, chunk
        self.offset = 0
        self.paused = False
        self.pauses = 0
        self.stopped = False

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.offset < len(self.data):
            piece = self.data[self.offset : self.offset + self.chunk]
            self.offset += len(piece)
            self.stream.write(piece)
        if self.offset >= len(self.data) and not self.paused:
            self.stream.unregisterProducer()
            self.stream.loseConnection()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def stopProducing(self) -> None:
        self.stopped = True


class PausedOnArrival(StreamRecorder):
    """Pauses its stream as soon as it is attached."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


def test_flow_control_pauses_the_sender_and_resuming_delivers_everything(net):
    """
    A paused receiver stops granting window: the sender's producer is paused
    after about window + high-water bytes; resuming delivers all, in order.
    """
    window = 64 * 1024
    chunk = 4 * 1024
    settings = ConnectionSettings(window=window, max_frame_size=16 * 1024)
    provider = RecordingProvider("sink", protocol_factory=PausedOnArrival)
    server = net.add_peer({"sink": provider}, settings=settings)
    client = net.add_peer(settings=settings)
    net.connect(client, server)
    net.flush()
    data = bytes(range(256)) * (8 * window // 256)
    stream = client.open_stream(server, "sink")
    producer = ChunkProducer(stream, data, chunk)
    stream.registerProducer(producer, True)
    producer.resumeProducing()
    net.flush()

    receiver = provider.protocols[0]
    assert producer.paused, (producer.offset, producer.pauses, len(receiver.received))
    assert window * 2 <= producer.offset <= window * 2 + chunk
    assert receiver.received == b""

    receiver.transport.resumeProducing()
    net.flush()
    assert receiver.received == data
    assert receiver.ended
    assert producer.pauses >= 2


def test_bulk_transfer_does_not_delay_a_small_message_on_another_stream(pair, net):
    """A small message queued behind a bulk stream arrives in the first round that carries data."""
    client, server, _, sink = pair
    bulk_data = b"x" * (12 * 1024 * 1024)  # several windows
    bulk, small = client.open_stream(server, "sink"), client.open_stream(server, "sink")
    bulk.write(bulk_data)
    small.write(b"urgent")
    bulk_remote = small_remote = None
    first_bulk_round = small_round = None
    for round_number in range(100):
        net.pump()
        if bulk_remote is None and len(sink.protocols) == 2:
            bulk_remote, small_remote = sink.protocols
        if bulk_remote is not None and bulk_remote.received and first_bulk_round is None:
            first_bulk_round = round_number
        if small_remote is not None and small_remote.received == b"urgent":
            small_round = round_number
            break
    assert small_round is not None and small_round == first_bulk_round
    assert len(bulk_remote.received) < len(bulk_data), (small_round, first_bulk_round)
    net.flush()
    assert len(bulk_remote.received) == len(bulk_data)


class Exploding(StreamRecorder):
    """Raises on ``boom``; echoes anything else."""

    def dataReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("provider bug")
        self.transport.write(data)


def test_provider_exception_resets_only_that_stream(net):
    """A provider raising in dataReceived resets that stream (provider-error); others go on."""
    provider = RecordingProvider("fragile", protocol_factory=Exploding)
    server, client = net.add_peer({"fragile": provider}), net.add_peer()
    net.connect(client, server)
    net.flush()
    bad, good = client.open_stream(server, "fragile"), client.open_stream(server, "fragile")
    bad.write(b"boom")
    good.write(b"fine")
    net.flush()

    assert bad.protocol.lost.check(StreamReset)
    assert bad.protocol.lost.value.code == "provider-error"
    assert good.protocol.received == b"fine" and good.protocol.lost is None
    good.write(b" still")
    net.flush()
    assert good.protocol.received == b"fine still"
    assert client.session(server).state is ConnectionState.READY


def test_stream_to_an_unknown_provider_is_reset(pair, net):
    """Opening a stream to a provider the peer does not run resets it with unknown-provider."""
    client, server, _, _ = pair
    stream = client.open_stream(server, "nope")
    net.flush()
    assert stream.protocol.lost.check(StreamReset)
    assert stream.protocol.lost.value.code == "unknown-provider"
    assert client.session(server).state is ConnectionState.READY


def test_keepalive_ping_measures_rtt(pair, net):
    """After keepalive_interval of silence a PING goes out; its PONG sets rtt."""
    client, server, _, _ = pair
    conn = client.session(server)
    assert conn.rtt is None
    net.clock.advance(net.settings.keepalive_interval)  # the PING is written, not delivered
    net.clock.advance(0.25)
    net.flush()
    assert conn.rtt == pytest.approx(0.25)
    assert server.session(client).rtt == pytest.approx(0.25)


def test_silent_peer_is_dropped_after_idle_timeout(pair, net):
    """With nothing arriving from the peer, the connection closes after idle_timeout."""
    client, server, _, _ = pair
    conn = client.session(server)
    closed = _results(conn.closed)
    net.link(client, server).hold(server)
    steps = int(net.settings.idle_timeout / net.settings.keepalive_interval)
    for _ in range(steps - 1):
        net.advance(net.settings.keepalive_interval)
        assert conn.state is ConnectionState.READY
    with capturedLogs() as events:
        net.advance(net.settings.keepalive_interval)
    assert conn.close_reason.startswith("idle-timeout")
    assert any("idle_timeout" in formatEvent(e) for e in events)
    net.advance(5)  # the silent peer never answers the TLS close: aborted
    assert closed and closed[0].startswith("idle-timeout")
    assert client.session(server) is None


def test_handshake_that_never_finishes_times_out(net):
    """A connection whose TLS handshake never completes is aborted after handshake_timeout."""
    server, client = net.add_peer(), net.add_peer()
    outcome = _results(net.connect(client, server))
    link = net.link(client, server)
    link.hold(client)
    link.hold(server)
    net.advance(net.settings.handshake_timeout - 0.5)
    assert outcome == []
    net.advance(0.5)
    assert outcome[0].check(ConnectionLost)
    assert "handshake timed out" in outcome[0].getErrorMessage()
    assert link.client_connection.state is ConnectionState.CLOSED
    assert link.server_connection.close_reason == "handshake timed out"
    assert client.manager.connection_count == 0 and server.manager.connection_count == 0


def test_goaway_from_the_peer_closes_and_records_the_reason(pair, net):
    """A GOAWAY from the peer closes the connection, promptly, with the peer's reason."""
    client, server, _, _ = pair
    conn = client.session(server)
    closed = _results(conn.closed)
    server.session(client).close("maintenance", "going down")
    net.flush()
    assert closed == ["peer said maintenance: going down"]
    assert conn.state is ConnectionState.CLOSED
    assert client.session(server) is None and server.session(client) is None
    assert net.clock.getDelayedCalls() == []


class TypeRecorder(PlainRecorder):
    """Records the type of every piece of data it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.types: set[type] = set()

    def dataReceived(self, data: bytes) -> None:
        self.types.add(type(data))
        super().dataReceived(data)


class BufferTypeRecorder(TypeRecorder):
    accepts_buffers = True


@pytest.mark.parametrize(
    ("factory", "allowed"),
    [(TypeRecorder, {bytes}), (BufferTypeRecorder, {bytes, memoryview})],
)
def test_protocols_get_bytes_unless_they_accept_buffers(net, factory, allowed):
    """Pieces cut from received data reach a protocol as bytes unless it accepts buffers."""
    provider = RecordingProvider("plain", protocol_factory=factory)
    server, client = net.add_peer({"plain": provider}), net.add_peer()
    net.connect(client, server)
    net.flush()
    stream = client.open_stream(server, "plain")
    payload = bytes(range(256)) * 1024
    for i in range(0, len(payload), 10_000):  # frames that straddle the transport's chunks
        stream.write(payload[i : i + 10_000])
        net.flush()
    remote = provider.protocols[0]
    assert remote.received == payload
    assert remote.types <= allowed
    if memoryview in allowed:
        assert memoryview in remote.types  # the copy was saved
