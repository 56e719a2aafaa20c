"""
:class:`LocalPeer`: one peer put together.

Identity, TLS policy, peer manager, own addresses, address book, event log,
control router and providers are wired here and only here, the same way for
the daemon (:mod:`peerd.service`), the in-memory test kit
(:mod:`peerd.testing`) and the benchmarks. A ``LocalPeer`` opens no socket:
whoever builds it says how to dial (``dial``) and hands accepted
connections to :meth:`LocalPeer.inbound_factory`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from peerd import __version__
from peerd.control.core_events import PeerEvents
from peerd.control.events import EventLog
from peerd.control.router import Router
from peerd.identity import Identity
from peerd.interfaces import IResourceProvider
from peerd.net.addressbook import AddressBook
from peerd.net.connection import ConnectionSettings, PeerConnection
from peerd.net.manager import InboundFactory, NetworkPolicy, PeerManager
from peerd.net.own_addresses import OwnAddresses
from peerd.net.streams import Stream, route_to_provider
from peerd.node import ProviderNode
from peerd.peerid import PeerAddress
from peerd.tls import PeerTLSPolicy
from peerd.wire.messages import Hello

log = Logger()

AGENT = f"peerd/{__version__}"
"""The agent string a daemon announces in its HELLO."""

Dial = Callable[[PeerAddress, PeerConnection], defer.Deferred]
"""``dial(address, connection)``: carry ``connection`` to ``address`` (TLS included)."""


class LocalPeer:
    """
    One peer: what the daemon, the memory network and the benchmarks share.

    :param identity: who this peer is.
    :param clock: the clock of every timer (the reactor in the daemon).
    :param data_dir: where the address book and the providers' data live.
    :param dialer: ``dialer(tls_policy) -> dial``: how this peer reaches others.
    :param workers: the worker pool providers run blocking work on.
    :param reactor: what providers get as ``node.reactor`` (``clock`` if None).
    :param wall_clock: POSIX time, for the address book and event stamps.
    :param listening: whether this peer accepts inbound connections.
    :param agent: the agent string of its HELLO (:data:`AGENT` if None).
    """

    def __init__(
        self,
        identity: Identity,
        *,
        clock: Any,
        data_dir: Path,
        dialer: Callable[[PeerTLSPolicy], Dial],
        workers: Any,
        connection_settings: ConnectionSettings | None = None,
        policy: NetworkPolicy | None = None,
        announce: list[PeerAddress] | tuple = (),
        listening: bool = True,
        agent: str | None = None,
        reactor: Any = None,
        wall_clock: Callable[[], float] = time.time,
        rng: Any = None,
    ) -> None:
        self.identity = identity
        self.peer_id = identity.peer_id
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.data_dir = data_dir
        self.workers = workers
        self.agent = agent if agent is not None else AGENT
        self.tls_policy = PeerTLSPolicy(identity)
        self.router = Router()
        self.events = EventLog(wall_clock, epoch=f"{int(wall_clock() * 1000):x}")
        self.providers: dict[str, IResourceProvider] = {}
        self.provider_versions: dict[str, str] = {}
        self.manager = PeerManager(
            local_peer_id=identity.peer_id,
            clock=clock,
            settings=connection_settings or ConnectionSettings(),
            policy=policy or NetworkPolicy(),
            dial=dialer(self.tls_policy),
            hello=self.hello,
            tls_policy=self.tls_policy,
            route_stream=self.route_stream,
            rng=rng,
        )
        self.addresses = OwnAddresses(
            identity.peer_id,
            announce=announce,
            reachable=listening,
            changed=self._addresses_changed,
        )
        self.address_book = AddressBook(data_dir / "peers.json", wall_clock)
        self.manager.add_observer(self.address_book)
        self.manager.known_addresses = self.address_book.addresses_of
        self.manager.add_observer(PeerEvents(self.events))
        self.manager.limit_hit = lambda key, reason: self.events.emit(
            "limit.hit", key=key, reason=reason
        )

    def __repr__(self) -> str:
        return f"<LocalPeer {self.peer_id.short}>"

    # -- what the manager calls ------------------------------------------------------

    def hello(self) -> Hello:
        """This peer's HELLO: PeerID, agent, addresses, providers (the manager adds a nonce)."""
        return Hello(
            peer_id=str(self.peer_id),
            agent=self.agent,
            listen=self.addresses.all(),
            providers=dict(self.provider_versions),
        )

    def route_stream(self, stream: Stream) -> None:
        """Hand a stream a peer opened to the provider it names."""
        route_to_provider(self.providers, stream)

    def inbound_factory(self) -> InboundFactory:
        """The factory that accepts peer connections (mutual TLS, then the manager)."""
        return InboundFactory(self.tls_policy, self.manager, self.clock)

    def _addresses_changed(self, addresses: list[str]) -> None:
        log.info(
            "announcing relayed addresses: {addresses}",
            addresses=" ".join(self.addresses.relayed) or "none",
        )
        self.manager.announce(addresses)

    # -- providers -----------------------------------------------------------------

    def node(self, name: str) -> ProviderNode:
        """
        The :class:`~peerd.node.ProviderNode` provider ``name`` is handed: its
        data dir is ``data_dir/providers/NAME`` (created, mode 0700) and its
        routes live under ``/api/v1/providers/NAME/``.
        """
        data_dir = self.data_dir / "providers" / name
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return ProviderNode(
            name=name,
            manager=self.manager,
            reactor=self.reactor,
            data_dir=data_dir,
            control=self.router.for_provider(name),
            workers=self.workers,
            addresses=self.addresses,
            events=self.events,
        )

    def build_provider(self, factory: Any, options: dict) -> IResourceProvider:
        """Build ``factory``'s provider with its parsed ``options`` and add it."""
        provider = factory.build(self.node(factory.name), options)
        self.add_provider(factory.name, provider, str(factory.version))
        return provider

    def add_provider(self, name: str, provider: IResourceProvider, version: str) -> None:
        """Serve streams tagged ``name`` with ``provider``, announced from the next HELLO on."""
        self.providers[name] = provider
        self.provider_versions[name] = version

    def start_provider(self, name: str) -> defer.Deferred:
        """Start one provider; one that fails to start is logged and disabled."""
        provider = self.providers[name]
        return defer.maybeDeferred(provider.start).addErrback(self._provider_failed, name)

    def start_providers(self) -> None:
        """Start every provider (see :meth:`start_provider`)."""
        for name in list(self.providers):
            self.start_provider(name)

    @defer.inlineCallbacks
    def stop_providers(self, timeout: float = 10) -> Any:
        """Stop every provider, waiting at most ``timeout`` seconds for each."""
        for name, provider in list(self.providers.items()):
            try:
                yield defer.maybeDeferred(provider.stop).addTimeout(timeout, self.clock)
            except Exception:
                log.failure("provider {name} failed to stop cleanly", name=name)

    def provider_statuses(self) -> dict:
        """``{name: {"version", "status"}}``; a failing ``status()`` reports its error."""
        result = {}
        for name, provider in sorted(self.providers.items()):
            try:
                status = provider.status()
            except Exception as e:
                log.failure("provider {name} failed to report status", name=name)
                status = {"error": f"{type(e).__name__}: {e}"}
            result[name] = {"version": self.provider_versions[name], "status": status}
        return result

    def _provider_failed(self, failure: Failure, name: str) -> None:
        log.failure("provider {name} failed to start; it is disabled", failure, name=name)
        self.events.emit(
            "provider.error", provider=name, error=failure.getErrorMessage(), fatal=True
        )
        self.providers.pop(name, None)
        self.provider_versions.pop(name, None)
