"""
Mutual TLS 1.3 between peers, without certificate authorities.

Both sides present their self-signed identity certificate and accept any
certificate during the handshake; who the remote *is* is decided afterwards,
in code: :func:`peer_id_of_transport` derives the PeerID the remote proved
(it holds the private key of the certificate it showed), and
:func:`check_peer_id` compares it with the PeerID that was dialled.

Use :class:`PeerTLSPolicy` wherever Twisted takes a TLS connection creator::

    TLSMemoryBIOFactory(policy, isClient, wrappedFactory)
    wrapClientTLS(policy, endpoint)
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from zope.interface import implementer

from peerd.identity import Identity, peer_id_from_certificate
from peerd.peerid import PeerID

ALPN_PROTOCOL = b"peerd/1"


class PeerIdentityError(Exception):
    """The remote peer did not prove an acceptable identity."""


class PeerIDMismatch(PeerIdentityError):
    """The remote proved a PeerID other than the one we dialled."""

    def __init__(self, expected: PeerID, actual: PeerID) -> None:
        super().__init__(f"expected peer {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


def _accept_any_certificate(
    connection: SSL.Connection, certificate: object, errno: int, depth: int, ok: int
) -> bool:
    # Self-signed certificates are the norm; the PeerID is checked after the
    # handshake.  TLS itself still proves the remote holds the certificate's key.
    return True


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    if ALPN_PROTOCOL in offered:
        return ALPN_PROTOCOL
    # An exception here makes OpenSSL send a fatal no_application_protocol
    # alert; pyOpenSSL re-raises it from do_handshake, and Twisted's TLS
    # protocol treats an SSL.Error as a failed handshake.  Twisted reads
    # ``args[0]`` as OpenSSL's error queue: a list of (lib, func, reason).
    reason = f"peer offered ALPN {offered!r}, not {ALPN_PROTOCOL!r}"
    raise SSL.Error([("peerd", "alpn_select", reason)])


def _make_context(identity: Identity, *, server: bool) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.use_privatekey(identity.private_key)
    context.use_certificate(identity.certificate)
    context.check_privatekey()
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any_certificate)
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if server:
        context.set_alpn_select_callback(_select_alpn)
    else:
        context.set_alpn_protos([ALPN_PROTOCOL])
    return context


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class PeerTLSPolicy:
    """
    The TLS side of a peer: mutual TLS 1.3 with ``identity``'s certificate,
    ALPN ``peerd/1``, any remote certificate accepted during the handshake.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._server_context = _make_context(identity, server=True)
        self._client_context = _make_context(identity, server=False)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A server-side connection for Twisted's ``TLSMemoryBIOProtocol``."""
        connection = SSL.Connection(self._server_context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_accept_state()
        return connection

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A client-side connection for Twisted's ``TLSMemoryBIOProtocol``."""
        connection = SSL.Connection(self._client_context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


def peer_id_of_transport(transport: object) -> PeerID:
    """
    The PeerID the remote end of a completed TLS handshake proved.

    Call it from ``handshakeCompleted`` on the protocol wrapped by the TLS
    layer (its ``transport`` is the TLS protocol).

    :raises PeerIdentityError: no certificate, or ALPN ``peerd/1`` was not
        negotiated (a client that offered no ALPN at all gets this far).
    """
    certificate = transport.getPeerCertificate()  # type: ignore[attr-defined]
    if certificate is None:
        raise PeerIdentityError("the peer presented no certificate")
    negotiated = getattr(transport, "negotiatedProtocol", None)
    if negotiated != ALPN_PROTOCOL:
        raise PeerIdentityError(f"the peer negotiated ALPN {negotiated!r}, not {ALPN_PROTOCOL!r}")
    return peer_id_from_certificate(certificate.to_cryptography())


def check_peer_id(expected: PeerID | None, actual: PeerID) -> None:
    """
    Accept ``actual`` if it is the PeerID we dialled (any, if ``expected`` is ``None``).

    :raises PeerIDMismatch: naming both.
    """
    if expected is not None and expected != actual:
        raise PeerIDMismatch(expected, actual)
