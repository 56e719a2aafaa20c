"""
The relay in memory: the same composition as the daemon (own addresses, TLS
policy, address book) lets a hidden peer reserve, be dialed through the
relay, and lose its circuit at the relay's byte limit, all on one Clock.
"""

from __future__ import annotations

from pathlib import Path

from peerd.peerid import PeerAddress
from peerd.providers.relay.plugin import RelayFactory
from peerd.testing import MemoryNetwork, MemoryPeer, RecordingProvider

KiB = 1024


def relayed_address(hidden: MemoryPeer, relay: MemoryPeer) -> PeerAddress:
    """The address ``hidden`` announces through ``relay``."""
    for text in hidden.addresses.all():
        address = PeerAddress.parse(text)
        if address.relay_id == relay.peer_id:
            return address
    raise AssertionError(
        f"{hidden!r} announces nothing through {relay!r}: {hidden.addresses.all()}"
    )


def network(
    tmp_path: Path, **relay_config: str
) -> tuple[MemoryNetwork, MemoryPeer, MemoryPeer, MemoryPeer]:
    """A relay R, a peer B that accepts no connections and reserves on R, and a dialer C."""
    net = MemoryNetwork(data_dir=tmp_path)
    relay = net.add_peer()
    relay.add_provider("relay", RelayFactory(), config={"rate": "0", **relay_config})
    hidden = net.add_peer(listening=False)
    hidden.add_provider("relay", RelayFactory())
    hidden.add_provider("echo", RecordingProvider("echo", echo=True))
    dialer = net.add_peer()
    dialer.add_provider("relay", RelayFactory(), config={"serve": "no"})
    net.connect(hidden, relay)
    net.connect(dialer, relay)
    net.flush()
    return net, relay, hidden, dialer


def test_hidden_peer_announces_a_relayed_address(tmp_path: Path) -> None:
    """B has no direct address; after reserving on R it announces ``B@R@host:port``."""
    net, relay, hidden, _ = network(tmp_path)
    assert hidden.addresses.direct() == []
    address = relayed_address(hidden, relay)
    assert address.peer_id == hidden.peer_id
    assert address.host_port == relay.address.host_port
    assert relay.providers["relay"].status()["reservations"] == 1


def test_session_through_the_relay_carries_streams(tmp_path: Path) -> None:
    """C dials B's relayed address: a mutual-TLS session via R, and a stream echoes through it."""
    net, relay, hidden, dialer = network(tmp_path)
    connected = dialer.manager.connect(relayed_address(hidden, relay))
    net.flush()
    conn = connected.result
    assert conn.info.peer_id == hidden.peer_id
    assert conn.via == relay.peer_id
    stream = dialer.open_stream(hidden, "echo")
    stream.write(b"through the relay")
    net.flush()
    assert stream.protocol.received == b"through the relay"
    assert relay.providers["relay"].status()["circuits"] == 1


def test_circuit_cut_at_its_byte_limit(tmp_path: Path) -> None:
    """
    With ``circuit_max_bytes = 64KiB`` the relay cuts the circuit once it has
    carried that much: C's session with B ends, and the relay holds no circuit.
    """
    net, relay, hidden, dialer = network(tmp_path, circuit_max_bytes="64KiB")
    dialer.manager.connect(relayed_address(hidden, relay))
    net.flush()
    assert hidden.peer_id in dialer.manager.sessions
    stream = dialer.open_stream(hidden, "echo")
    for _ in range(16):
        stream.write(b"x" * (8 * KiB))
    net.flush()
    assert hidden.peer_id not in dialer.manager.sessions
    assert dialer.peer_id not in hidden.manager.sessions
    assert relay.providers["relay"].status()["circuits"] == 0
    assert len(stream.protocol.received) < 64 * KiB
