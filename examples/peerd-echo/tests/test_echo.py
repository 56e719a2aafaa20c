"""
Tests for the echo provider, with no sockets and no reactor: streams are
in-memory fakes, time is a :class:`~twisted.internet.task.Clock`, and the
control routes are driven through peerd's real :class:`Router`.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from peerd_echo import EchoCounters, EchoFactory, EchoProtocol, EchoProvider, EchoRequest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from peerd.config import ConfigError, validate_provider_options
from peerd.control.router import ApiRequest, Router
from peerd.interfaces import (
    INode,
    IResourceProvider,
    IResourceProviderFactory,
    IStream,
    NotConnected,
    StreamReset,
)
from peerd.peerid import PeerID
from peerd.plugin_loader import discover_factories

PLUGIN_MODULE = (
    Path(__file__).resolve().parent.parent / "peerd" / "plugins" / "peerd_echo_plugin.py"
)
LOCAL = PeerID.from_public_key_der(b"local peer")
REMOTE = PeerID.from_public_key_der(b"remote peer")
DEFAULTS = validate_provider_options("test.ini", "provider:echo", EchoFactory.config_schema, {})


@implementer(IStream)
class FakeStream:
    """
    The parts of :class:`peerd.net.streams.Stream` a provider uses, recorded.

    ``high_water`` mimics the stream's write queue: once that many bytes are
    written and not yet :meth:`drain`-ed, a registered streaming producer is
    paused. :meth:`remote_ends` delivers the peer's half-close the way the
    real stream does.
    """

    stream_id = 1
    provider = "echo"
    peer = None

    def __init__(self, header: dict | None = None, high_water: int = 1 << 20) -> None:
        self.header = header or {}
        self.protocol: Any = None
        self.written = b""
        self.queued = 0
        self.high_water = high_water
        self.producer: Any = None
        self.streaming: bool | None = None
        self.reading_paused = False
        self.ended = False
        self.reset_reason: str | None = None
        self.connected = True
        self.disconnecting = False

    def attach(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        assert not self.ended, "write after loseConnection"
        self.written += data
        self.queued += len(data)
        if self.producer is not None and self.queued >= self.high_water:
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.ended = self.disconnecting = True

    def abortConnection(self) -> None:
        self.reset("aborted by the application")

    def reset(self, reason: str) -> None:
        if self.reset_reason is None:
            self.reset_reason = reason
            self.lost(StreamReset("cancelled", reason))

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False

    def stopProducing(self) -> None:
        self.reset("stopped by the application")

    # -- driving it, as the connection would -------------------------------------

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def remote_ends(self) -> None:
        IHalfCloseableProtocol(self.protocol).readConnectionLost()

    def drain(self) -> None:
        self.queued = 0
        if self.producer is not None:
            self.producer.resumeProducing()

    def lost(self, reason: Exception) -> None:
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(Failure(reason))


@implementer(INode)
class FakeNode:
    """An :class:`INode` whose only peer answers ``open_stream`` with ``open_stream_result``."""

    log = None
    data_dir = Path("/nonexistent")
    reactor = None

    def __init__(self) -> None:
        self.peer_id = LOCAL
        self.clock = Clock()
        self.router = Router()
        self.control = self.router.for_provider("echo")
        self.connected = {REMOTE}
        self.opened: list[tuple[PeerID, dict, Any]] = []
        self.open_stream_result: Any = None

    def connected_peers(self) -> list:
        return [object() for _ in self.connected]

    def peer(self, peer_id: PeerID) -> object | None:
        return object() if peer_id in self.connected else None

    def open_stream(self, peer_id: PeerID, header: dict, protocol: Any) -> Any:
        self.opened.append((peer_id, header, protocol))
        if isinstance(self.open_stream_result, Exception):
            return fail(self.open_stream_result)
        stream = FakeStream(header)
        stream.attach(protocol)
        self.open_stream_result = stream
        return succeed(stream)

    def connect(self, address: str) -> Any:
        return fail(NotImplementedError(address))

    def add_peer_observer(self, observer: object) -> None:
        pass

    def remove_peer_observer(self, observer: object) -> None:
        pass

    def run_in_thread(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return succeed(function(*args, **kwargs))


def build(**options: str) -> tuple[FakeNode, EchoProvider]:
    node = FakeNode()
    config = validate_provider_options(
        "test.ini", "provider:echo", EchoFactory.config_schema, options
    )
    provider = EchoFactory().build(node, config)
    provider.start()
    return node, provider


def start_ping(node: FakeNode, body: object) -> Deferred:
    """Dispatch ``POST ping``; the Deferred fires with ``(status, body)``."""
    request = ApiRequest("POST", "providers/echo/ping", body=json.dumps(body).encode())
    return node.router.dispatch(request)


def call(node: FakeNode, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """Dispatch an API request that answers at once; returns ``(status, body)``."""
    data = b"" if body is None else json.dumps(body).encode()
    request = ApiRequest(method=method, path=f"providers/echo/{path}", body=data)
    results: list = []
    node.router.dispatch(request).addCallback(results.append)
    [result] = results
    return result


# -- the contract ----------------------------------------------------------------


def test_factory_and_provider_provide_their_interfaces() -> None:
    """The plugin object and what it builds pass ``verifyObject``."""
    factory = EchoFactory()
    assert verifyObject(IResourceProviderFactory, factory)
    assert verifyObject(IResourceProvider, factory.build(FakeNode(), DEFAULTS))
    assert (factory.name, factory.version, factory.enabled_by_default) == ("echo", "1", True)


def test_plugin_module_exposes_a_factory_peerd_accepts() -> None:
    """The dropped-in module defines one factory, which peerd's loader accepts as ``echo``."""
    namespace = runpy.run_path(str(PLUGIN_MODULE))
    assert list(discover_factories([namespace["echo"]])) == ["echo"]


def test_config_defaults_and_values() -> None:
    """``max_message_size`` defaults to 64KiB and takes sizes; bad values name the key."""
    assert DEFAULTS == {"max_message_size": 65536, "ping_timeout": 30.0}
    schema = EchoFactory.config_schema
    parsed = validate_provider_options(
        "a.ini", "provider:echo", schema, {"max_message_size": "1MiB"}
    )
    assert parsed["max_message_size"] == 1 << 20
    with pytest.raises(ConfigError, match=r"\[provider:echo\] max_message_size = 'lots'"):
        validate_provider_options("a.ini", "provider:echo", schema, {"max_message_size": "lots"})


# -- serving a stream --------------------------------------------------------------


def test_echoes_every_byte_and_half_closes_after_the_peer() -> None:
    """Bytes come back in order; the stream is ended only once the peer has ended."""
    _, provider = build()
    stream = FakeStream()
    provider.stream_opened(stream)
    stream.receive(b"hello ")
    stream.receive(b"world")
    assert stream.written == b"hello world"
    assert not stream.ended
    stream.remote_ends()
    assert stream.ended and stream.reset_reason is None
    stream.lost(ConnectionDone("stream closed"))
    assert provider.status() == {
        "streams_served": 1,
        "streams_active": 0,
        "streams_refused": 0,
        "bytes_echoed": 11,
        "pings_sent": 0,
        "max_message_size": 65536,
    }


def test_follows_the_stream_backpressure() -> None:
    """The stream is its own streaming producer: reading pauses while the echo queues up."""
    stream = FakeStream(high_water=8)
    stream.attach(EchoProtocol(EchoCounters(), limit=1024))
    assert (stream.producer, stream.streaming) == (stream, True)
    stream.receive(b"1234")
    assert not stream.reading_paused
    stream.receive(b"5678")
    assert stream.reading_paused
    stream.drain()
    assert not stream.reading_paused
    stream.remote_ends()
    assert stream.producer is None and stream.ended


def test_resets_a_stream_over_the_limit() -> None:
    """A stream carrying more than ``max_message_size`` is reset, and nothing more is echoed."""
    _, provider = build(max_message_size="8")
    stream = FakeStream()
    provider.stream_opened(stream)
    stream.receive(b"12345678")
    stream.receive(b"9")
    assert stream.written == b"12345678"
    assert "max_message_size" in stream.reset_reason
    status = provider.status()
    assert (status["streams_active"], status["streams_refused"]) == (0, 1)


# -- the client side ----------------------------------------------------------------


def test_request_sends_half_closes_and_collects_the_echo() -> None:
    """The message goes out followed by end-of-stream; ``done`` fires with the echo."""
    clock = Clock()
    request = EchoRequest(b"ping", limit=100, clock=clock, timeout=5)
    stream = FakeStream()
    stream.attach(request)
    assert (stream.written, stream.ended) == (b"ping", True)
    stream.receive(b"pi")
    stream.receive(b"ng")
    stream.remote_ends()
    assert request.done.result == b"ping"
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (lambda s, c: s.lost(StreamReset("refused", "go away")), "reset the stream: go away"),
        (lambda s, c: s.lost(ConnectionLost("gone")), "ended before the echo"),
        (lambda s, c: s.receive(b"x" * 11), "larger than 10 bytes"),
        (lambda s, c: c.advance(5), "no echo within 5s"),
    ],
)
def test_request_fails_without_a_complete_echo(event: Any, message: str) -> None:
    """A reset, a lost connection, an oversized echo or the timeout fail ``done``."""
    clock = Clock()
    request = EchoRequest(b"ping", limit=10, clock=clock, timeout=5)
    stream = FakeStream()
    stream.attach(request)
    event(stream, clock)
    failures: list[Failure] = []
    request.done.addErrback(failures.append)
    assert message in str(failures[0].value)
    assert not clock.getDelayedCalls()
    assert not stream.connected or stream.reset_reason is not None


# -- control routes -----------------------------------------------------------------


def test_ping_answers_with_the_echo() -> None:
    """``POST ping`` opens a stream to the peer, sends the message and answers the echo."""
    node, _ = build()
    pending = start_ping(node, {"peer": str(REMOTE).lower(), "message": "hi ☃"})
    [(peer_id, header, _)] = node.opened
    assert (peer_id, header) == (REMOTE, {})
    stream = node.open_stream_result
    assert stream.written == "hi ☃".encode()
    node.clock.advance(0.25)
    stream.receive(stream.written)
    stream.remote_ends()
    results: list = []
    pending.addCallback(results.append)
    assert results == [(200, {"peer": str(REMOTE), "echo": "hi ☃", "rtt_ms": 250.0})]
    assert call(node, "GET", "status")[1]["pings_sent"] == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"message": "hi"}, 400, '"peer"'),
        ({"peer": str(REMOTE)}, 400, '"message"'),
        ({"peer": "not-a-peer", "message": "hi"}, 400, "not a PeerID"),
        ({"peer": str(REMOTE), "message": "x" * 9}, 400, "limit is 8 bytes"),
        ({"peer": str(LOCAL), "message": "hi"}, 404, "is not connected"),
    ],
)
def test_ping_refuses_bad_input(body: dict, status: int, message: str) -> None:
    """Malformed fields are 400, an unconnected peer is 404; no stream is opened."""
    node, _ = build(max_message_size="8")
    answer = call(node, "POST", "ping", body)
    assert answer[0] == status
    assert message in answer[1]["error"]
    assert node.opened == []


def test_ping_reports_a_failed_open_or_reset_as_502() -> None:
    """A stream the node cannot open, or one the peer resets, answers 502."""
    node, _ = build()
    node.open_stream_result = NotConnected("peer does not offer echo")
    answer = call(node, "POST", "ping", {"peer": str(REMOTE), "message": "hi"})
    assert answer == (
        502,
        {"error": f"cannot open an echo stream to {REMOTE}: peer does not offer echo"},
    )

    node, _ = build()
    pending = start_ping(node, {"peer": str(REMOTE), "message": "hi"})
    node.open_stream_result.lost(StreamReset("provider-error", "boom"))
    results: list = []
    pending.addCallback(results.append)
    assert results[0][0] == 502
    assert "reset the stream: boom" in results[0][1]["error"]


# -- over peerd's real streams, in memory (peerd.testing) ----------------------------


def memory_pair(tmp_path: Path, **settings: Any) -> tuple[Any, Any, Any]:
    """Two in-memory peers running echo, connected: ``(network, client, server)``."""
    testing = pytest.importorskip("peerd.testing")
    from peerd.net.connection import ConnectionSettings

    network = testing.MemoryNetwork(data_dir=tmp_path, settings=ConnectionSettings(**settings))
    server = network.add_peer({"echo": EchoFactory()})
    client = network.add_peer({"echo": EchoFactory()})
    network.connect(client, server)
    network.flush()
    return network, client, server


def test_ping_between_two_memory_peers(tmp_path: Path) -> None:
    """A ping through the client's control router comes back from the server's provider."""
    network, client, server = memory_pair(tmp_path)
    request = ApiRequest(
        "POST",
        "providers/echo/ping",
        body=json.dumps({"peer": str(server.peer_id), "message": "x" * 60_000}).encode(),
    )
    results: list = []
    client.router.dispatch(request).addCallback(results.append)
    network.flush()
    [(status, body)] = results
    assert (status, body["peer"], body["echo"]) == (200, str(server.peer_id), "x" * 60_000)
    served = server.providers["echo"].status()
    assert (served["streams_served"], served["streams_active"], served["bytes_echoed"]) == (
        1,
        0,
        60_000,
    )


def test_a_reader_that_stops_stalls_the_echo(tmp_path: Path) -> None:
    """
    While the opener does not read its echo, the echo provider stops reading
    too (bounded by the stream window); once it reads again, everything flows.
    """
    testing = pytest.importorskip("peerd.testing")
    window = 16384
    network, client, server = memory_pair(tmp_path, window=window, max_frame_size=16384)
    recorder = testing.StreamRecorder()
    stream = client.open_stream(server, "echo", recorder)
    stream.pauseProducing()
    stream.write(b"y" * 60_000)
    stream.loseConnection()
    network.flush()
    stalled = server.providers["echo"].status()["bytes_echoed"]
    assert 0 < stalled <= 3 * window < 60_000
    stream.resumeProducing()
    network.flush()
    assert recorder.received == b"y" * 60_000
    assert recorder.ended
    assert server.providers["echo"].status()["bytes_echoed"] == 60_000
