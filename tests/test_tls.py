"""Mutual TLS 1.3 between peers, run in memory with ``iosim``."""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from zope.interface import implementer
from zope.interface.verify import verifyObject

from peerd.identity import Identity
from peerd.tls import (
    ALPN_PROTOCOL,
    PeerIdentityError,
    PeerIDMismatch,
    PeerTLSPolicy,
    check_peer_id,
    peer_id_of_transport,
)


@implementer(IHandshakeListener)
class RecordingProtocol(Protocol):
    """Records the handshake outcome, the PeerID it proved, data and loss."""

    def __init__(self) -> None:
        self.handshake_done = False
        self.peer_id = None
        self.peer_error: Exception | None = None
        self.received = b""
        self.lost_reason = None

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        try:
            self.peer_id = peer_id_of_transport(self.transport)
        except PeerIdentityError as e:
            self.peer_error = e

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.lost_reason = reason


@implementer(IOpenSSLClientConnectionCreator)
class ContextClient:
    """A client connection creator around a hand-made context (for misbehaving clients)."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


def _accept(*args) -> bool:
    return True


def _context(
    identity: Identity | None,
    max_version: int = SSL.TLS1_3_VERSION,
    alpn: list[bytes] | None = None,
) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(max_version)
    if identity is not None:
        context.use_privatekey(identity.private_key)
        context.use_certificate(identity.certificate)
    context.set_verify(SSL.VERIFY_PEER, _accept)
    if alpn is not None:
        context.set_alpn_protos(alpn)
    return context


def _connect(server_creator, client_creator):
    """
    Connect a TLS server and client in memory; return (server, client, pump).

    The TLS layer batches small writes with ``clock.callLater(0, ...)``, so
    both factories share the pump's clock (never the global reactor).
    """
    clock = Clock()
    built: dict[bool, RecordingProtocol] = {}

    def side(creator, is_client: bool):
        def build():
            wrapped = Factory.forProtocol(RecordingProtocol)
            factory = TLSMemoryBIOFactory(creator, is_client, wrapped, clock=clock)
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7845))
            built[is_client] = protocol.wrappedProtocol  # dropped by the wrapper when lost
            return protocol

        return build

    _, _, pump = iosim.connectedServerAndClient(
        side(server_creator, False), side(client_creator, True), clock=clock
    )
    pump.flush()
    return built[False], built[True], pump


@pytest.fixture(scope="module")
def server_identity() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def client_identity() -> Identity:
    return Identity.generate()


def test_policy_provides_both_creator_interfaces(server_identity):
    """PeerTLSPolicy is both a server and a client TLS connection creator."""
    policy = PeerTLSPolicy(server_identity)
    assert verifyObject(IOpenSSLServerConnectionCreator, policy)
    assert verifyObject(IOpenSSLClientConnectionCreator, policy)


def test_mutual_handshake_proves_both_peer_ids(server_identity, client_identity):
    """Both sides complete a TLS 1.3 handshake and learn the other's PeerID."""
    server, client, _ = _connect(PeerTLSPolicy(server_identity), PeerTLSPolicy(client_identity))
    assert server.handshake_done and client.handshake_done
    assert server.peer_error is None and client.peer_error is None
    assert server.peer_id == client_identity.peer_id
    assert client.peer_id == server_identity.peer_id
    for side in (server, client):
        assert side.transport.negotiatedProtocol == ALPN_PROTOCOL
        assert side.transport._tlsConnection.get_protocol_version_name() == "TLSv1.3"
        assert side.lost_reason is None


def test_application_data_flows_both_ways(server_identity, client_identity):
    """After the handshake, bytes written on either side arrive on the other."""
    server, client, pump = _connect(PeerTLSPolicy(server_identity), PeerTLSPolicy(client_identity))
    client.transport.write(b"hello from client")
    server.transport.write(b"hello from server")
    pump.flush()
    assert server.received == b"hello from client"
    assert client.received == b"hello from server"


def test_check_peer_id_accepts_expected_and_none(server_identity):
    """check_peer_id accepts the expected PeerID, and any PeerID when none is expected."""
    check_peer_id(server_identity.peer_id, server_identity.peer_id)
    check_peer_id(None, server_identity.peer_id)


def test_check_peer_id_mismatch_names_both(server_identity, client_identity):
    """A PeerID other than the one dialled raises PeerIDMismatch naming both."""
    _, client, _ = _connect(PeerTLSPolicy(server_identity), PeerTLSPolicy(client_identity))
    with pytest.raises(PeerIDMismatch) as info:
        check_peer_id(client_identity.peer_id, client.peer_id)
    assert info.value.expected == client_identity.peer_id
    assert info.value.actual == server_identity.peer_id
    assert str(info.value) == (
        f"expected peer {client_identity.peer_id}, got {server_identity.peer_id}"
    )
    assert isinstance(info.value, PeerIdentityError)


def _assert_failed(side: RecordingProtocol) -> None:
    assert not side.handshake_done
    assert side.lost_reason is not None
    assert side.lost_reason.check(SSL.Error)


def test_tls12_only_client_is_refused(server_identity, client_identity):
    """A client that only speaks TLS 1.2 fails the handshake on both sides."""
    client_creator = ContextClient(
        _context(client_identity, max_version=SSL.TLS1_2_VERSION, alpn=[ALPN_PROTOCOL])
    )
    server, client, _ = _connect(PeerTLSPolicy(server_identity), client_creator)
    _assert_failed(server)
    _assert_failed(client)


def test_client_without_certificate_is_refused(server_identity):
    """A client that presents no certificate never completes the handshake on the server."""
    client_creator = ContextClient(_context(None, alpn=[ALPN_PROTOCOL]))
    server, client, _ = _connect(PeerTLSPolicy(server_identity), client_creator)
    _assert_failed(server)
    # In TLS 1.3 the client finishes its side before the server has checked
    # its (absent) certificate; the server's alert then ends the connection.
    assert client.lost_reason is not None
    assert client.lost_reason.check(SSL.Error)
    assert "certificate required" in str(client.lost_reason.value)
    assert client.received == b""


def test_client_with_other_alpn_is_refused(server_identity, client_identity):
    """A client offering only another ALPN protocol fails the handshake."""
    client_creator = ContextClient(_context(client_identity, alpn=[b"http/1.1"]))
    server, client, _ = _connect(PeerTLSPolicy(server_identity), client_creator)
    _assert_failed(server)
    _assert_failed(client)


def test_client_without_alpn_is_not_a_peer(server_identity, client_identity):
    """A client offering no ALPN completes TLS but proves no PeerID to the server."""
    client_creator = ContextClient(_context(client_identity))
    server, _, _ = _connect(PeerTLSPolicy(server_identity), client_creator)
    assert server.handshake_done
    assert server.peer_id is None
    assert "ALPN" in str(server.peer_error)


def test_peer_id_of_transport_without_certificate():
    """A transport with no peer certificate raises PeerIdentityError."""

    class NoCertificate:
        negotiatedProtocol = ALPN_PROTOCOL

        def getPeerCertificate(self):
            return None

    with pytest.raises(PeerIdentityError, match="no certificate"):
        peer_id_of_transport(NoCertificate())
