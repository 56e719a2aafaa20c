"""
:class:`ProviderNode`: the :class:`~peerd.interfaces.INode` each provider
is handed — the narrow view of the daemon a provider may use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from peerd.interfaces import IControlRouter, INode, IPeerInfo, IPeerObserver, NotConnected
from peerd.net.manager import PeerManager
from peerd.net.own_addresses import OwnAddresses
from peerd.peerid import PeerAddress, PeerID
from peerd.workers import WorkerPool


@implementer(INode)
class ProviderNode:
    """What provider ``name`` sees of the daemon."""

    def __init__(
        self,
        *,
        name: str,
        manager: PeerManager,
        reactor: Any,
        data_dir: Path,
        control: IControlRouter,
        workers: WorkerPool,
        addresses: OwnAddresses | None = None,
        events: Any = None,
    ) -> None:
        self.name = name
        self.peer_id = manager.local_peer_id
        self.reactor = reactor
        self.clock = manager.clock
        self.log = Logger(namespace=f"peerd.provider.{name}")
        self.data_dir = data_dir
        self.control = control
        self._manager = manager
        self._workers = workers
        self._addresses = addresses
        self._events = events
        self.reachable = bool(addresses.reachable) if addresses is not None else False

    def connected_peers(self) -> list[IPeerInfo]:
        """Every peer with an established session."""
        return self._manager.peers()

    def peer(self, peer_id: PeerID) -> IPeerInfo | None:
        """The connected peer with that PeerID, or None."""
        conn = self._manager.sessions.get(peer_id)
        return conn.info if conn is not None else None

    def open_stream(self, peer_id: PeerID, header: dict, protocol: Any) -> defer.Deferred:
        """Open a stream to this provider on ``peer_id``."""
        conn = self._manager.sessions.get(peer_id)
        if conn is None:
            return defer.fail(NotConnected(f"peer {peer_id} is not connected"))
        if self.name not in conn.info.providers:
            return defer.fail(NotConnected(f"peer {peer_id} does not offer {self.name}"))
        try:
            return defer.succeed(conn.open_stream(self.name, header, protocol))
        except Exception as e:
            return defer.fail(e)

    def connect(self, address: str) -> defer.Deferred:
        """Dial a peer; fires with its :class:`IPeerInfo`."""
        try:
            parsed = PeerAddress.parse(address)
        except ValueError as e:
            return defer.fail(e)
        return self._manager.connect(parsed).addCallback(lambda conn: conn.info)

    def disconnect(self, peer_id: PeerID, reason: str) -> None:
        """Close the session with ``peer_id``, saying why."""
        self.log.warn("disconnecting {peer}: {reason}", peer=peer_id, reason=reason)
        self._manager.disconnect(peer_id, "misbehaving", reason)

    def addresses(self) -> list[str]:
        """This peer's dialable addresses, direct and relayed."""
        return self._addresses.all() if self._addresses is not None else []

    def set_relayed_addresses(self, addresses: list[str]) -> None:
        """Announce these relayed addresses too."""
        if self._addresses is not None:
            self._addresses.set_relayed(addresses)

    def set_relay_dialer(self, dialer: Any) -> None:
        """Let the daemon reach relayed addresses through ``dialer``."""
        self._manager.relay_dialer = dialer

    def session_over(
        self, stream: Any, initiator: bool, expected_peer_id: Any, via: Any
    ) -> defer.Deferred:
        """A peer session inside ``stream``; fires with its IPeerInfo."""
        d = self._manager.session_over(stream, initiator, expected_peer_id, via)
        return d.addCallback(lambda conn: conn.info)

    def add_peer_observer(self, observer: IPeerObserver) -> None:
        """Be told of sessions that start and end."""
        self._manager.add_observer(observer)

    def remove_peer_observer(self, observer: IPeerObserver) -> None:
        """Stop telling ``observer``."""
        self._manager.remove_observer(observer)

    def run_in_thread(self, function: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        """Run blocking work on the bounded worker pool."""
        return self._workers.run(function, *args, **kwargs)

    def emit(self, event_type: str, **fields: Any) -> None:
        """Publish an event on the daemon's event stream, tagged with this provider."""
        if self._events is None:
            return
        fields.setdefault("provider", self.name)
        try:
            self._events.emit(event_type, **fields)
        except (ValueError, TypeError) as e:
            self.log.error("provider {name} emitted a bad event: {error}", name=self.name, error=e)
