"""
The memory network: :class:`MemoryNetwork` of :class:`MemoryPeer`\\ s that dial
each other through real mutual TLS carried by Twisted's ``iosim``, on one
:class:`~twisted.internet.task.Clock` (see :mod:`peerd.testing`).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from peerd.config import validate_provider_options
from peerd.identity import Identity
from peerd.interfaces import IResourceProviderFactory
from peerd.net.connection import ConnectionSettings, PeerConnection
from peerd.net.manager import NetworkPolicy
from peerd.net.streams import Stream
from peerd.peer import LocalPeer
from peerd.peerid import PeerAddress, PeerID
from peerd.testing.providers import StreamRecorder
from peerd.tls import PeerTLSPolicy

log = Logger()

PORT = 7845
"""The port every memory peer pretends to listen on."""

AGENT = "peerd-testing"
"""The agent string memory peers announce in their HELLO."""


class NotQuiet(AssertionError):
    """:meth:`MemoryNetwork.flush` gave up: the peers never stopped talking."""


class SynchronousWorkers:
    """
    A stand-in for :class:`peerd.workers.WorkerPool` that runs each call at
    once, on the calling thread, and returns ``defer.maybeDeferred`` of it:
    deterministic, and no threads to wait for.  Work that must really run off
    the reactor thread cannot be tested with it.
    """

    size = 1
    waiting = 0

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple, dict]] = []

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """Call ``function(*args, **kwargs)`` now; a Deferred of its result or exception."""
        self.calls.append((function, args, kwargs))
        return defer.maybeDeferred(function, *args, **kwargs)


class MemoryLink(iosim.IOPump):
    """
    One in-memory TCP connection between two memory peers: an
    :class:`iosim.IOPump` that can also hold back the bytes one side sends
    (to simulate a peer gone silent, or a handshake that never finishes).

    ``client`` / ``server`` are the TLS protocols of the dialing and the
    accepting side; ``client_connection`` / ``server_connection`` the
    :class:`~peerd.net.connection.PeerConnection`\\ s above them.
    """

    def __init__(
        self,
        dialer: MemoryPeer,
        listener: MemoryPeer,
        client: Any,
        server: Any,
        client_io: iosim.FakeTransport,
        server_io: iosim.FakeTransport,
        clock: Clock,
    ) -> None:
        super().__init__(client, server, client_io, server_io, False, clock=clock)
        self.dialer = dialer
        self.listener = listener
        self.client_connection: PeerConnection = client.wrappedProtocol
        self.server_connection: PeerConnection = server.wrappedProtocol
        self._held: set[str] = set()

    def hold(self, sender: MemoryPeer) -> None:
        """Stop delivering what ``sender`` writes (it queues up) until :meth:`release`."""
        self._held.add(self._side(sender))

    def release(self, sender: MemoryPeer) -> None:
        """Deliver what ``sender`` writes again, starting with what was held."""
        self._held.discard(self._side(sender))

    @property
    def closed(self) -> bool:
        """Whether both ends have been told the connection is gone."""
        return bool(self.clientIO.disconnected and self.serverIO.disconnected)

    def pump(self, debug: bool = False, advanceClock: bool = True) -> bool:
        """
        Move the bytes each side has written to the other (except held ones),
        then report a close; returns whether anything happened.
        """
        if advanceClock:
            self.clock.advance(0)
        from_server = None if "server" in self._held else self.serverIO.getOutBuffer()
        from_client = None if "client" in self._held else self.clientIO.getOutBuffer()
        if from_client:
            self.serverIO.bufferReceived(from_client)
        if from_server:
            self.clientIO.bufferReceived(from_server)
        if from_client or from_server:
            return True
        for this, other in ((self.serverIO, self.clientIO), (self.clientIO, self.serverIO)):
            if this.disconnecting and not this.disconnected:
                this.disconnected = True
                other.disconnecting = True
                other.reportDisconnect()
                return True
        return False

    def _side(self, peer: MemoryPeer) -> str:
        if peer is self.dialer:
            return "client"
        if peer is self.listener:
            return "server"
        raise ValueError(f"{peer!r} is not an end of this link")


class MemoryPeer(LocalPeer):
    """
    One peer of a :class:`MemoryNetwork`: a real :class:`~peerd.peer.LocalPeer`
    (the same composition the daemon runs: TLS policy, manager, own
    addresses, address book, events, router) whose dials go through the
    memory network and whose worker pool is :class:`SynchronousWorkers`.

    :ivar identity: its fresh :class:`~peerd.identity.Identity`.
    :ivar peer_id: ``identity.peer_id``.
    :ivar address: its pinned :class:`~peerd.peerid.PeerAddress`
        (``PEERID@10.0.0.N:7845``), also its announced address.
    :ivar manager: the real :class:`~peerd.net.manager.PeerManager`.
    :ivar providers: name -> running :class:`~peerd.interfaces.IResourceProvider`.
    :ivar router: the control :class:`~peerd.control.router.Router` that
        providers built by this peer mount their routes on.
    :ivar accepting: set to False to refuse inbound dials
        (``ConnectionRefusedError``), like a closed port.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        identity: Identity,
        host: str,
        *,
        settings: ConnectionSettings,
        policy: NetworkPolicy,
        data_dir: Path,
        rng: Any = None,
        listening: bool = True,
    ) -> None:
        self.network = network
        self.address = PeerAddress(host, PORT, identity.peer_id)
        self.accepting = listening
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().__init__(
            identity,
            clock=network.clock,
            data_dir=data_dir,
            dialer=lambda tls_policy: self._dial,
            workers=SynchronousWorkers(),
            connection_settings=settings,
            policy=policy,
            listening=listening,
            agent=AGENT,
            wall_clock=network.clock.seconds,
            rng=rng,
        )
        if listening:
            self.addresses.listening_on(host, PORT)

    def __repr__(self) -> str:
        return f"<MemoryPeer {self.peer_id.short} at {self.address.host_port}>"

    # -- providers -----------------------------------------------------------------

    def add_provider(  # type: ignore[override]
        self,
        name: str,
        provider: Any,
        version: str | None = None,
        *,
        config: Mapping[str, str] | None = None,
    ) -> Any:
        """
        Run ``provider`` under ``name``: an :class:`IResourceProvider`, or an
        :class:`IResourceProviderFactory`, which is built with :meth:`node`
        and its schema's defaults.  The provider is started and announced in
        the HELLO of connections made from now on.  Returns the provider.

        :param config: raw option strings for a factory, as they would appear
            in the ``[provider:NAME]`` section (``{"upload_rate": "1MB"}``);
            checked against the schema, the rest take their defaults.
        :raises peerd.config.ConfigError: an unknown option or a bad value.
        """
        if IResourceProviderFactory.providedBy(provider):
            factory = provider
            options = validate_provider_options(
                "<memory>", f"provider:{name}", factory.config_schema, dict(config or {})
            )
            provider = factory.build(self.node(name), options)
            version = version or str(factory.version)
        super().add_provider(name, provider, version or str(getattr(provider, "version", "1.0")))
        self.start_provider(name)
        return provider

    def _dial(self, address: PeerAddress, connection: PeerConnection) -> defer.Deferred:
        return self.network.dial(self, address, connection)

    # -- conveniences -----------------------------------------------------------------

    def session(self, other: MemoryPeer | PeerID) -> PeerConnection | None:
        """The established connection to ``other``, or None."""
        peer_id = other.peer_id if isinstance(other, MemoryPeer) else other
        return self.manager.sessions.get(peer_id)

    def open_stream(
        self,
        other: MemoryPeer | PeerID,
        provider: str,
        protocol: Any = None,
        header: dict | None = None,
    ) -> Stream:
        """
        Open a stream to ``provider`` on ``other`` over the established session
        and attach ``protocol`` (a new :class:`StreamRecorder` if None; it is
        ``stream.protocol``).  Call :meth:`MemoryNetwork.flush` to send it.

        :raises LookupError: no session with ``other``.
        """
        conn = self.session(other)
        if conn is None:
            raise LookupError(f"{self!r} has no session with {other!r}")
        return conn.open_stream(provider, header or {}, protocol or StreamRecorder())


class MemoryNetwork:
    """
    A set of :class:`MemoryPeer`\\ s that can dial each other through real
    mutual TLS carried in memory, all on one :class:`Clock`.

    :param clock: the clock of every peer (a new one by default).
    :param settings: the connection settings of peers added without their own.
    :param data_dir: where peers keep provider data (``DIR/<peer>/providers/NAME``);
        a new temporary directory, *not* removed afterwards, by default —
        pass ``tmp_path`` in pytest.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        settings: ConnectionSettings | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.settings = settings if settings is not None else ConnectionSettings()
        self._data_dir = data_dir
        self.peers: list[MemoryPeer] = []
        self.links: list[MemoryLink] = []
        self._hosts = itertools.count(1)

    def add_peer(
        self,
        providers: Mapping[str, Any] | None = None,
        *,
        settings: ConnectionSettings | None = None,
        policy: NetworkPolicy | None = None,
        identity: Identity | None = None,
        rng: Any = None,
        data_dir: Path | None = None,
        listening: bool = True,
    ) -> MemoryPeer:
        """
        A new peer with a fresh identity (unless given), running ``providers``
        (name -> provider or provider factory; see :meth:`MemoryPeer.add_provider`).

        :param policy: limits and backoff for its manager (defaults otherwise).
        :param rng: ``random.Random`` for its backoff jitter.
        :param data_dir: where this peer keeps provider data, instead of
            ``DIR/<host>``: give it the ``data_dir`` of an earlier peer (and
            its ``identity``) to restart that peer after a simulated crash.
        :param listening: False for a peer that accepts no connections (like
            ``[peer] listen = none``): it announces no direct address.
        """
        host = f"10.0.0.{next(self._hosts)}"
        identity = identity if identity is not None else Identity.generate()
        base = self._data_dir
        if base is None:
            base = self._data_dir = Path(tempfile.mkdtemp(prefix="peerd-testing-"))
        peer = MemoryPeer(
            self,
            identity,
            host,
            settings=settings if settings is not None else self.settings,
            policy=policy if policy is not None else NetworkPolicy(),
            data_dir=data_dir if data_dir is not None else base / host,
            rng=rng,
            listening=listening,
        )
        for name, provider in (providers or {}).items():
            peer.add_provider(name, provider)
        self.peers.append(peer)
        return peer

    def peer_at(self, host_port: str) -> MemoryPeer | None:
        """The peer whose address is ``host:port``, or None."""
        for peer in self.peers:
            if peer.address.host_port == host_port:
                return peer
        return None

    def connect(
        self, dialer: MemoryPeer, listener: MemoryPeer, pinned: bool = True
    ) -> defer.Deferred[PeerConnection]:
        """
        ``dialer`` dials ``listener`` through its manager (pinned to the
        listener's PeerID unless ``pinned`` is false).  Returns the manager's
        Deferred, which fires with the connection once HELLOs are exchanged:
        call :meth:`flush` to get there.
        """
        address = listener.address
        if not pinned:
            address = PeerAddress(address.host, address.port)
        return dialer.manager.connect(address)

    def dial(
        self, dialer: MemoryPeer, address: PeerAddress, connection: PeerConnection
    ) -> defer.Deferred:
        """
        The ``dial`` function of every memory peer's manager: find the peer
        listening at ``address``, wrap both connections in TLS with their
        peers' policies, and join them with a :class:`MemoryLink`.  Fires at
        once with ``connection`` (like ``connectProtocol``), or fails with
        ``ConnectionRefusedError`` if nobody accepts at that address.
        """
        listener = self.peer_at(address.host_port)
        if listener is None or not listener.accepting:
            return defer.fail(ConnectionRefusedError(address.host_port))
        accepted = listener.manager.connection(initiator=False)
        client = _tls(dialer.tls_policy, True, connection, self.clock).buildProtocol(
            _ipv4(address.host)
        )
        server = _tls(listener.tls_policy, False, accepted, self.clock).buildProtocol(
            _ipv4(dialer.address.host)
        )
        client_io = iosim.FakeTransport(
            client,
            isServer=False,
            hostAddress=_ipv4(dialer.address.host, 40000 + len(self.links)),
            peerAddress=_ipv4(address.host),
        )
        server_io = iosim.FakeTransport(
            server,
            isServer=True,
            hostAddress=_ipv4(address.host),
            peerAddress=_ipv4(dialer.address.host, 40000 + len(self.links)),
        )
        link = MemoryLink(dialer, listener, client, server, client_io, server_io, self.clock)
        self.links.append(link)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        return defer.succeed(connection)

    def link(self, a: MemoryPeer, b: MemoryPeer) -> MemoryLink:
        """The most recent link between ``a`` and ``b`` (either direction)."""
        for link in reversed(self.links):
            if {link.dialer, link.listener} == {a, b}:
                return link
        raise LookupError(f"no link between {a!r} and {b!r}")

    def pump(self) -> bool:
        """
        One round: run what is due now (``clock.advance(0)``), then move the
        bytes waiting on every link once.  Returns whether anything moved.
        """
        self.clock.advance(0)
        moved = False
        for link in list(self.links):
            if link.pump(advanceClock=False):
                moved = True
        self.links = [link for link in self.links if not link.closed]
        return moved

    def flush(self, max_rounds: int = 10_000) -> None:
        """
        Pump until quiet: no bytes left to move and nothing due now.
        The clock does not move.

        :raises NotQuiet: still busy after ``max_rounds`` rounds.
        """
        for _ in range(max_rounds):
            if not self.pump():
                return
        raise NotQuiet(f"the memory network was still busy after {max_rounds} rounds")

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (running what falls due), then :meth:`flush`."""
        self.clock.advance(seconds)
        self.flush()

    def stop(self) -> defer.Deferred:
        """Stop every peer's manager (GOAWAY ``shutdown``) and flush; fires when all closed."""
        done = defer.DeferredList([peer.manager.stop() for peer in self.peers])
        self.flush()
        return done


def _ipv4(host: str, port: int = PORT) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def _tls(policy: PeerTLSPolicy, is_client: bool, connection: PeerConnection, clock: Clock) -> Any:
    inner = Factory.forProtocol(lambda: connection)
    inner.noisy = False
    factory = TLSMemoryBIOFactory(policy, is_client, inner, clock=clock)
    factory.noisy = False
    return factory
