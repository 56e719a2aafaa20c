"""
Who we are connected to: dialing, admission, duplicate resolution, limits,
and keeping configured peers connected with backoff.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from peerd.interfaces import IPeerInfo, IPeerObserver, StreamReset
from peerd.net.connection import ConnectionSettings, PeerConnection
from peerd.net.streams import Stream
from peerd.peerid import PeerAddress, PeerID
from peerd.wire.messages import Hello

log = Logger()


class ConnectionLimitReached(Exception):
    """``[network] max_connections`` forbids another connection."""


@dataclass(frozen=True)
class NetworkPolicy:
    """The parts of ``[network]`` the manager enforces."""

    max_connections: int = 64
    allow: frozenset[PeerID] | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 300.0


def survivor(local_id: PeerID, first: PeerConnection, second: PeerConnection) -> PeerConnection:
    """
    Of two connections to the same peer, the one both sides keep.

    A direct connection beats a relayed one; then the connection dialed by
    the peer with the smaller PeerID wins; between two dialed by the same
    peer, the one whose dialer's HELLO nonce is smaller. Both sides see the
    same relays, dialers and nonces, so they agree.
    """

    def rank(conn: PeerConnection) -> tuple[bool, PeerID, bytes]:
        dialer = local_id if conn.initiator else conn.peer_id
        return (conn.via is not None, dialer, conn.connection_nonce)  # type: ignore[return-value]

    return first if rank(first) <= rank(second) else second


class PeerManager:
    """
    Owns every peer connection of this daemon.

    :param dial: ``dial(address, connection) -> Deferred`` connects the
        transport and attaches ``connection``; injected so tests can use
        memory transports.
    :param hello: builds our HELLO (without the nonce).
    :param route_stream: hands a stream the peer opened to its provider.
    """

    def __init__(
        self,
        *,
        local_peer_id: PeerID,
        clock: IReactorTime,
        settings: ConnectionSettings,
        policy: NetworkPolicy,
        dial: Callable[[PeerAddress, PeerConnection], defer.Deferred],
        hello: Callable[[], Hello],
        route_stream: Callable[[Stream], None],
        rng: random.Random | None = None,
        tls_policy: Any = None,
    ) -> None:
        self.local_peer_id = local_peer_id
        self.clock = clock
        self.settings = settings
        self.policy = policy
        self._dial = dial
        self._hello = hello
        self._route_stream = route_stream
        self._rng = rng or random.Random()
        self.sessions: dict[PeerID, PeerConnection] = {}
        self._connecting: set[PeerConnection] = set()
        self._observers: list[IPeerObserver] = []
        self._kept: list[KeepConnected] = []
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._closed_provider_bytes: dict[str, list[int]] = {}
        self._stopping = False
        self.tls_policy = tls_policy
        #: ``relay_dialer(address) -> Deferred[stream]`` opens a circuit to a relayed address.
        self.relay_dialer: Callable[[PeerAddress], defer.Deferred] | None = None
        #: ``known_addresses(peer_id) -> list[PeerAddress]`` from the address book.
        self.known_addresses: Callable[[PeerID], list[PeerAddress]] = lambda peer_id: []
        #: ``limit_hit(key, reason)``: a configured bound refused something (for events).
        self.limit_hit: Callable[[str, str], None] = lambda key, reason: None

    # -- public -------------------------------------------------------------------

    def connection(self, initiator: bool, expected: PeerID | None = None) -> PeerConnection:
        """A new connection protocol owned by this manager."""
        conn = PeerConnection(
            self,
            self.clock,
            self.settings,
            initiator=initiator,
            local_peer_id=self.local_peer_id,
            expected_peer_id=expected,
        )
        if not initiator:
            # Nobody waits on an inbound connection's ``ready``; a handshake
            # that fails must not log an unhandled error in a Deferred.
            conn.ready.addErrback(lambda _: None)
        self._connecting.add(conn)
        return conn

    def connect(self, address: PeerAddress) -> defer.Deferred[PeerConnection]:
        """Dial ``address`` unless that peer is connected; fires when the session is up."""
        if address.peer_id is not None and address.peer_id in self.sessions:
            return defer.succeed(self.sessions[address.peer_id])
        if address.peer_id == self.local_peer_id:
            return defer.fail(ValueError("that address is this peer's own"))
        if self._stopping:
            return defer.fail(ConnectionLimitReached("the peer is shutting down"))
        if self.connection_count >= self.policy.max_connections:
            log.warn(
                "not dialing {address}: connection limit of {limit} reached "
                "([network] max_connections)",
                address=str(address),
                limit=self.policy.max_connections,
            )
            self.limit_hit("[network] max_connections", f"not dialing {address}")
            return defer.fail(
                ConnectionLimitReached(
                    f"connection limit of {self.policy.max_connections} reached ([network] max_connections)"
                )
            )
        if address.relay_id is not None:
            return self._dial_relayed(address)
        conn = self.connection(initiator=True, expected=address.peer_id)
        dialing = self._dial(address, conn)

        def dial_failed(failure: Failure) -> Failure:
            self._connecting.discard(conn)
            if not conn.ready.called:
                conn.ready.errback(failure)
            return failure

        dialing.addErrback(dial_failed)
        dialing.addErrback(lambda _: None)
        if address.peer_id is None:
            return conn.ready
        return conn.ready.addErrback(self._try_relayed, address)

    def _try_relayed(self, failure: Failure, address: PeerAddress) -> Any:
        """A direct dial failed: try the peer's relayed addresses, if we know any."""
        assert address.peer_id is not None
        relayed = [a for a in self.known_addresses(address.peer_id) if a.relay_id is not None]
        if not relayed or self.relay_dialer is None or address.peer_id in self.sessions:
            return self.sessions.get(address.peer_id) or failure
        log.info(
            "direct dial to {address} failed ({error}); trying through relay {relay}",
            address=str(address),
            error=failure.getErrorMessage(),
            relay=relayed[0].relay_id,
        )
        attempt = self._dial_relayed(relayed[0])
        for other in relayed[1:3]:
            attempt.addErrback(lambda _, a=other: self._dial_relayed(a))
        return attempt

    def _dial_relayed(self, address: PeerAddress) -> defer.Deferred[PeerConnection]:
        if self.relay_dialer is None:
            return defer.fail(ConnectionLimitReached("no relay provider is running here"))
        d = self.relay_dialer(address)
        return d.addCallback(
            lambda stream: self.session_over(stream, True, address.peer_id, address.relay_id)
        )

    def session_over(
        self, stream: Any, initiator: bool, expected: PeerID | None, via: PeerID | None
    ) -> defer.Deferred[PeerConnection]:
        """
        Run a full mutual-TLS peer session inside ``stream`` (a relay
        circuit): the same handshake and PeerID checks as a direct
        connection. Fires with the connection once HELLOs are exchanged.
        """
        if self.tls_policy is None:
            return defer.fail(RuntimeError("no TLS policy to run a session over a stream"))
        conn = self.connection(initiator=initiator, expected=expected)
        conn.via = via
        inner = Factory.forProtocol(lambda: conn)
        inner.noisy = False
        factory = TLSMemoryBIOFactory(self.tls_policy, initiator, inner, self.clock)
        factory.noisy = False
        stream.attach(factory.buildProtocol(stream.getPeer()))

        def stream_reset(failure: Failure) -> Failure:
            # TLS reports any loss before its close alert as "lost in a non-clean
            # fashion"; a RESET of the stream (a relay refusing the circuit) says why.
            reason = getattr(stream, "lost_reason", None)
            return Failure(reason) if isinstance(reason, StreamReset) else failure

        return conn.ready.addErrback(stream_reset)

    def announce(self, listen: list[str]) -> None:
        """Tell every connected peer our dialable addresses changed."""
        for conn in list(self.sessions.values()):
            conn.announce(listen)

    def disconnect(self, peer_id: PeerID, code: str, reason: str) -> None:
        """Close the session with ``peer_id`` (if any) with GOAWAY ``code``."""
        conn = self.sessions.get(peer_id)
        if conn is not None:
            conn.close(code, reason)

    def keep_connected(self, addresses: Iterable[PeerAddress]) -> None:
        """Keep these peers connected, redialing with exponential backoff and jitter."""
        for address in addresses:
            keeper = KeepConnected(self, address, self._backoff())
            self._kept.append(keeper)
            keeper.start()

    def add_observer(self, observer: IPeerObserver) -> None:
        """Be told of sessions that start and end."""
        self._observers.append(observer)

    def remove_observer(self, observer: IPeerObserver) -> None:
        """Stop telling ``observer``."""
        if observer in self._observers:
            self._observers.remove(observer)

    def peers(self) -> list[IPeerInfo]:
        """Connected peers, oldest session first."""
        return [conn.info for conn in self.sessions.values()]

    def peer_listening_at(self, address: PeerAddress) -> PeerID | None:
        """The connected peer that announced ``address``'s host:port, if any."""
        for peer_id, conn in self.sessions.items():
            for announced in conn.info.listen_addresses:
                if announced.rpartition("@")[2] == address.host_port:
                    return peer_id
        return None

    @property
    def connection_count(self) -> int:
        """Established sessions plus connections still handshaking."""
        return len(self.sessions) + len(self._connecting)

    @property
    def bytes_in(self) -> int:
        """Plaintext bytes received over all connections, past and present."""
        live = sum(c.bytes_in for c in list(self.sessions.values()) + list(self._connecting))
        return self._closed_bytes_in + live

    @property
    def bytes_out(self) -> int:
        """Plaintext bytes sent over all connections, past and present."""
        live = sum(c.bytes_out for c in list(self.sessions.values()) + list(self._connecting))
        return self._closed_bytes_out + live

    def provider_bytes(self) -> dict[str, tuple[int, int]]:
        """Stream bytes by provider since start: name -> (received, sent)."""
        totals = {name: list(counts) for name, counts in self._closed_provider_bytes.items()}
        for conn in self.sessions.values():
            for name, (received, sent) in conn.provider_bytes.items():
                counts = totals.setdefault(name, [0, 0])
                counts[0] += received
                counts[1] += sent
        return {name: (counts[0], counts[1]) for name, counts in totals.items()}

    def stop(self, timeout: float = 3.0) -> defer.Deferred[None]:
        """Stop redialing, say GOAWAY on every connection, wait (bounded) for them to close."""
        self._stopping = True
        for keeper in self._kept:
            keeper.stop()
        connections = list(self.sessions.values()) + list(self._connecting)
        waits = []
        for conn in connections:
            waits.append(conn.closed)
            conn.close("shutdown", "the peer is shutting down")
        if not waits:
            return defer.succeed(None)
        done = defer.DeferredList(waits, consumeErrors=True)
        done.addTimeout(timeout, self.clock)
        done.addBoth(lambda _: None)
        return done

    # -- ConnectionHost -------------------------------------------------------------

    def local_hello(self) -> Hello:
        """Our HELLO with a fresh nonce."""
        hello = self._hello()
        return Hello(
            peer_id=hello.peer_id,
            agent=hello.agent,
            listen=hello.listen,
            providers=hello.providers,
            max_frame_size=self.settings.max_frame_size,
            window=self.settings.window,
            nonce=os.urandom(8),
        )

    def admit(self, conn: PeerConnection) -> tuple[str, str] | None:
        """Refuse ourselves, peers outside ``allow``, and connections over the limit."""
        peer_id = conn.peer_id
        if peer_id == self.local_peer_id:
            return ("self", "connected to itself")
        if (
            not conn.initiator
            and self.policy.allow is not None
            and peer_id not in self.policy.allow
        ):
            log.warn(
                "refusing peer {peer} from {address}: not in [network] allow",
                peer=peer_id,
                address=conn.remote_address,
            )
            return ("not-allowed", "this peer accepts only the peers in its allow list")
        if (
            not conn.initiator
            and peer_id not in self.sessions
            and len(self.sessions) >= self.policy.max_connections
        ):
            log.warn(
                "refusing peer {peer}: connection limit of {limit} reached ([network] max_connections)",
                peer=peer_id,
                limit=self.policy.max_connections,
            )
            self.limit_hit("[network] max_connections", f"refused peer {peer_id}")
            return ("too-many-connections", f"limit of {self.policy.max_connections} connections")
        return None

    def session_ready(self, conn: PeerConnection) -> None:
        """Register the session, resolving a duplicate connection to the same peer."""
        self._connecting.discard(conn)
        peer_id = conn.peer_id
        assert peer_id is not None
        existing = self.sessions.get(peer_id)
        if existing is not None and existing is not conn:
            keep = survivor(self.local_peer_id, existing, conn)
            drop = conn if keep is existing else existing
            log.info(
                "two connections to {peer}; keeping the {direction} one",
                peer=peer_id,
                direction=keep.direction,
            )
            if drop is conn:
                if not conn.ready.called:
                    conn.ready.callback(existing)
                conn.close("duplicate", "a connection to this peer already exists")
                return
            self.sessions[peer_id] = conn
            existing.close("duplicate", "a connection to this peer already exists")
            return
        self.sessions[peer_id] = conn
        log.info(
            "connected to {peer} at {address} ({direction}; providers: {providers})",
            peer=peer_id,
            address=conn.remote_address,
            direction=conn.direction,
            providers=", ".join(f"{k}/{v}" for k, v in sorted(conn.info.providers.items()))
            or "none",
        )
        for observer in list(self._observers):
            self._notify(observer.peer_connected, conn.info)

    def session_closed(self, conn: PeerConnection, reason: str) -> None:
        """Forget the connection; tell observers if it was the peer's session."""
        self._connecting.discard(conn)
        self._closed_bytes_in += conn.bytes_in
        self._closed_bytes_out += conn.bytes_out
        for provider, (received, sent) in conn.provider_bytes.items():
            counts = self._closed_provider_bytes.setdefault(provider, [0, 0])
            counts[0] += received
            counts[1] += sent
        if conn.peer_id is None or self.sessions.get(conn.peer_id) is not conn:
            return
        del self.sessions[conn.peer_id]
        log.info("disconnected from {peer}: {reason}", peer=conn.peer_id, reason=reason)
        for observer in list(self._observers):
            self._notify(observer.peer_disconnected, conn.info, reason)
        for keeper in self._kept:
            keeper.session_ended(conn.peer_id)

    def stream_opened(self, stream: Stream) -> None:
        """Route to the provider."""
        self._route_stream(stream)

    # -- internals -------------------------------------------------------------------

    def _backoff(self) -> Callable[[int], float]:
        return backoffPolicy(
            initialDelay=self.policy.backoff_initial,
            maxDelay=self.policy.backoff_max,
            factor=2.0,
            jitter=self._rng.random,
        )

    def _notify(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            log.failure("peer observer {observer} raised", observer=method)


class RedialState(Enum):
    """Where a :class:`KeepConnected` stands; the values are what status output shows."""

    WAITING = "waiting"
    DIALING = "dialing"
    CONNECTED = "connected"
    STOPPED = "stopped"


class KeepConnected:
    """
    Keeps one configured address connected.

    States: ``waiting`` (a redial is scheduled), ``dialing``, ``connected``
    (a session with the peer exists, whoever dialed it), ``stopped``.
    """

    def __init__(
        self, manager: PeerManager, address: PeerAddress, backoff: Callable[[int], float]
    ) -> None:
        self.manager = manager
        self.address = address
        self.peer_id = address.peer_id
        self.failures = 0
        self.state = RedialState.WAITING
        self._backoff = backoff
        self._call: Any = None

    def start(self) -> None:
        """Dial now."""
        self._dial()

    def stop(self) -> None:
        """Stop redialing."""
        self.state = RedialState.STOPPED
        if self._call is not None and self._call.active():
            self._call.cancel()

    def session_ended(self, peer_id: PeerID) -> None:
        """A session ended; redial soon if it was ours."""
        if self.state == RedialState.CONNECTED and peer_id == self.peer_id:
            self.state = RedialState.WAITING
            self._schedule(self._backoff(0))

    def _dial(self) -> None:
        self._call = None
        if self.state == RedialState.STOPPED:
            return
        if self.peer_id is None:
            self.peer_id = self.manager.peer_listening_at(self.address)
        if self.peer_id is not None and self.peer_id in self.manager.sessions:
            self.state = RedialState.CONNECTED
            return
        self.state = RedialState.DIALING
        d = self.manager.connect(self.address)
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, conn: PeerConnection) -> None:
        if self.state == RedialState.STOPPED:
            return
        if self.peer_id is not None and conn.peer_id != self.peer_id:
            return
        if self.address.peer_id is None and self.peer_id not in (None, conn.peer_id):
            log.warn(
                "peer at {address} changed identity from {old} to {new}",
                address=self.address.host_port,
                old=self.peer_id,
                new=conn.peer_id,
            )
        self.peer_id = conn.peer_id
        self.failures = 0
        self.state = (
            RedialState.CONNECTED if conn.peer_id in self.manager.sessions else RedialState.WAITING
        )
        if self.state == RedialState.WAITING:
            self._schedule(self._backoff(0))

    def _failed(self, failure: Failure) -> None:
        if self.state == RedialState.STOPPED:
            return
        self.failures += 1
        delay = self._backoff(self.failures)
        log.info(
            "could not connect to {address}: {error}; retrying in {delay:.1f}s",
            address=str(self.address),
            error=failure.getErrorMessage(),
            delay=delay,
        )
        self.state = RedialState.WAITING
        self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        if self._call is None or not self._call.active():
            self._call = self.manager.clock.callLater(delay, self._dial)


def tls_dialer(
    reactor: Any, tls_policy: Any
) -> Callable[[PeerAddress, PeerConnection], defer.Deferred]:
    """The production dialer: TCP to the address, wrapped in peerd's mutual TLS."""

    def dial(address: PeerAddress, conn: PeerConnection) -> defer.Deferred:
        endpoint = wrapClientTLS(
            tls_policy, clientFromString(reactor, address.client_endpoint_string())
        )
        return connectProtocol(endpoint, conn)

    return dial


class InboundFactory(TLSMemoryBIOFactory):
    """Accepts peer connections: mutual TLS around a manager-owned connection."""

    noisy = False

    def __init__(self, tls_policy: Any, manager: PeerManager, clock: Any) -> None:
        inner = Factory.forProtocol(lambda: manager.connection(initiator=False))
        inner.noisy = False
        super().__init__(tls_policy, False, inner, clock)
