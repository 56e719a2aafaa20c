"""
Hostile connections to a running peer: each is dropped, and only it.

One target peer (short ``handshake_timeout``) with a good peer connected to
it runs for the whole module; every test opens one hostile connection and
then checks that the daemon closed it, is still running, still answers
``status``, and still has the good peer's very same session.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cluster, Peer, wait_until
from OpenSSL import SSL

from peerd.identity import Identity
from peerd.tls import ALPN_PROTOCOL
from peerd.wire.frames import FrameType, encode_frame, encode_header
from peerd.wire.messages import Hello

CLOSE_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = "1s"


class Network:
    """The target, the good peer, and the good session as first seen."""

    def __init__(self, target: Peer, good: Peer) -> None:
        self.target = target
        self.good = good
        self.session = wait_until(
            lambda: target.peers().get(good.peer_id), 10, "the good peer to connect"
        )

    def check_unharmed(self) -> None:
        """The target runs, answers, and still has the good session, unchanged."""
        assert self.target.running, f"the target died:\n{self.target.log_tail()}"
        status = self.target.status()
        assert status["connections"]["total"] >= 1
        session = self.target.peers().get(self.good.peer_id)
        assert session is not None, f"the good peer was dropped:\n{self.target.log_tail()}"
        assert session["since"] == self.session["since"], "the good session was replaced"
        assert session["address"] == self.session["address"]
        assert self.good.peers()[self.target.peer_id]["since"] is not None


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A target peer and a good peer that keeps it connected."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("hostile")))
    try:
        target = cluster.add("target", network={"handshake_timeout": HANDSHAKE_TIMEOUT})
        good = cluster.add("good", peers=[target.address])
        cluster.start(target, good)
        yield Network(target, good)
    finally:
        cluster.cleanup()


def wait_closed_plain(sock: socket.socket, timeout: float = CLOSE_TIMEOUT) -> None:
    """Read (and discard, e.g. a TLS alert) until the daemon closes; fail on timeout."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return
    raise AssertionError(f"the daemon left the connection open for {timeout:g}s")


def wait_closed_tls(conn: SSL.Connection, sock: socket.socket, timeout: float = CLOSE_TIMEOUT):
    """Read over TLS until the daemon closes; return what arrived; fail on timeout."""
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the daemon left the TLS connection open for {timeout:g}s")
        if not conn.pending():
            readable, _, _ = select.select([sock], [], [], min(remaining, 0.2))
            if not readable:
                continue
        try:
            data = conn.recv(65536)
        except SSL.WantReadError:
            continue
        except (SSL.ZeroReturnError, SSL.SysCallError, ConnectionResetError):
            return received
        except SSL.Error as e:  # an alert from the daemon also ends it
            return received + repr(e).encode()
        if not data:
            return received
        received += data


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def tls_connect(port: int, identity: Identity) -> tuple[SSL.Connection, socket.socket]:
    """A real mutual TLS 1.3 handshake as ``identity``, like ``peerd/tls.py`` does."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.use_privatekey(identity.private_key)
    context.use_certificate(identity.certificate)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    context.set_alpn_protos([ALPN_PROTOCOL])
    sock = connect(port)
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket; reads go through select
    conn = SSL.Connection(context, sock)
    conn.set_connect_state()
    conn.do_handshake()
    assert conn.get_alpn_proto_negotiated() == ALPN_PROTOCOL
    assert conn.get_protocol_version_name() == "TLSv1.3"
    return conn, sock


def hello_frame(identity: Identity) -> bytes:
    hello = Hello(peer_id=str(identity.peer_id), agent="hostile-test/0", nonce=os.urandom(8))
    return encode_frame(FrameType.HELLO, 0, hello.encode())


def test_random_bytes(network: Network) -> None:
    """Random bytes on the peer port: the daemon closes that connection only."""
    with connect(network.target.port) as sock:
        sock.sendall(os.urandom(4096))
        wait_closed_plain(sock)
    network.check_unharmed()


def test_plaintext_http(network: Network) -> None:
    """A plaintext ``GET / HTTP/1.1`` on the peer port is dropped, nothing else."""
    with connect(network.target.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        wait_closed_plain(sock)
    network.check_unharmed()


def test_huge_frame_header(network: Network) -> None:
    """
    After a real mutual TLS 1.3 handshake, a frame header claiming a 4 GiB
    payload gets the connection dropped without the daemon waiting for (or
    buffering) the payload.
    """
    conn, sock = tls_connect(network.target.port, Identity.generate())
    with sock:
        conn.sendall(encode_header(FrameType.DATA, 1, 0xFFFFFFFF))
        wait_closed_tls(conn, sock)
    log = network.target.log_text()
    assert "frame of 4294967295 bytes exceeds the maximum" in log
    network.check_unharmed()


def test_hello_then_truncated_frame(network: Network) -> None:
    """
    A valid HELLO, then half a frame, then a close: the daemon lets the
    session go (it disappears from ``peers``) and nothing else changes.
    """
    identity = Identity.generate()
    conn, sock = tls_connect(network.target.port, identity)
    with sock:
        conn.sendall(hello_frame(identity))
        hostile = str(identity.peer_id)
        wait_until(lambda: hostile in network.target.peers(), 5, "the hostile session to open")
        conn.sendall(encode_frame(FrameType.PING, 0, b"12345678")[:-3])
        conn.shutdown()  # close_notify: we are done
        wait_closed_tls(conn, sock)
    wait_until(lambda: hostile not in network.target.peers(), 5, "the hostile session to go")
    network.check_unharmed()


def test_silent_client(network: Network) -> None:
    """A client that connects and sends nothing is dropped after handshake_timeout."""
    started = time.monotonic()
    with connect(network.target.port) as sock:
        wait_closed_plain(sock)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.5, f"dropped after {elapsed:.2f}s, before the handshake timeout"
    wait_until(
        lambda: "([network] handshake_timeout)" in network.target.log_text(),
        5,
        "the target to log the handshake timeout",
    )
    network.check_unharmed()
