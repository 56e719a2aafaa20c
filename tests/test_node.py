"""ProviderNode: the INode a provider gets, exercised between memory peers."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from peerd.interfaces import INode, IPeerInfo, IStream, NotConnected
from peerd.testing import (
    MemoryNetwork,
    RecordingProvider,
    RecordingProviderFactory,
    StreamRecorder,
)


def _results(d):
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def net(tmp_path) -> MemoryNetwork:
    return MemoryNetwork(data_dir=tmp_path)


def test_node_provides_inode(net):
    """A memory peer's node provides INode, with the peer's identity and clock."""
    peer = net.add_peer()
    node = peer.node("echo")
    assert verifyObject(INode, node)
    assert node.peer_id == peer.peer_id and node.clock is net.clock
    assert node.data_dir.is_dir() and node.data_dir.name == "echo"


def test_open_stream_to_an_unconnected_peer_fails(net):
    """open_stream fails with NotConnected for a peer without a session."""
    a, b = net.add_peer(), net.add_peer({"echo": RecordingProvider("echo")})
    outcome = _results(a.node("echo").open_stream(b.peer_id, {}, StreamRecorder()))
    assert outcome[0].check(NotConnected)
    assert "not connected" in outcome[0].getErrorMessage()


def test_open_stream_to_a_peer_without_the_provider_fails(net):
    """open_stream fails with NotConnected when the peer does not offer the provider."""
    a, b = net.add_peer(), net.add_peer({"other": RecordingProvider("other")})
    net.connect(a, b)
    net.flush()
    outcome = _results(a.node("echo").open_stream(b.peer_id, {}, StreamRecorder()))
    assert outcome[0].check(NotConnected)
    assert "does not offer echo" in outcome[0].getErrorMessage()


def test_open_stream_between_memory_peers(net):
    """open_stream to a connected peer offering the provider gives a working stream."""
    echo = RecordingProvider("echo", echo=True)
    a, b = net.add_peer(), net.add_peer({"echo": echo})
    node = a.node("echo")
    connected = _results(node.connect(str(b.address)))
    net.flush()
    assert verifyObject(IPeerInfo, connected[0]) and connected[0].peer_id == b.peer_id
    assert [peer.peer_id for peer in node.connected_peers()] == [b.peer_id]
    assert node.peer(b.peer_id).providers == {"echo": "1.0"}

    protocol = StreamRecorder()
    opened = _results(node.open_stream(b.peer_id, {"want": "echo"}, protocol))
    assert verifyObject(IStream, opened[0]) and protocol.transport is opened[0]
    protocol.transport.write(b"round trip")
    net.flush()
    assert protocol.received == b"round trip"
    assert echo.streams[0].header == {"want": "echo"}


def test_connect_with_a_bad_address_fails(net):
    """connect() with an unparsable address fails its Deferred, without raising."""
    outcome = _results(net.add_peer().node("echo").connect("not an address"))
    assert outcome[0].check(ValueError)


def test_run_in_thread_is_synchronous_in_memory(net):
    """In a memory peer, run_in_thread calls the function at once and fires with its result."""
    node = net.add_peer().node("echo")
    assert _results(node.run_in_thread(lambda a, b=0: a + b, 2, b=3)) == [5]


def test_factory_built_provider_gets_a_node_and_defaults(net):
    """A provider given as a factory is built with a node and its schema's defaults."""
    factory = RecordingProviderFactory("files")
    peer = net.add_peer({"files": factory})
    (provider,) = factory.built
    assert peer.providers["files"] is provider and provider.started
    assert verifyObject(INode, provider.node) and provider.config == {}
    assert peer.hello().providers == {"files": "1.0"}
