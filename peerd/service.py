"""
:class:`PeerService`: composes identity, TLS, the peer manager, providers
and the control API into one Twisted service tree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from peerd import __version__
from peerd.config import Settings
from peerd.control.api import install_core_routes
from peerd.control.core_events import PeerEvents, daemon_snapshot
from peerd.control.endpoints import ControlEndpoints
from peerd.control.events import EventLog
from peerd.control.router import Router
from peerd.control.web import WebListenError
from peerd.identity import Identity
from peerd.interfaces import IPeerControl, IResourceProvider
from peerd.net.addressbook import AddressBook
from peerd.net.connection import ConnectionSettings
from peerd.net.manager import NetworkPolicy, PeerManager, tls_dialer
from peerd.net.own_addresses import dialable_addresses
from peerd.net.streams import Stream, route_to_provider
from peerd.node import ProviderNode
from peerd.peerid import PeerAddress
from peerd.plugin_loader import SelectedProvider
from peerd.tls import PeerTLSPolicy
from peerd.wire.messages import Hello

log = Logger()

AGENT = f"peerd/{__version__}"


class StartupError(Exception):
    """The peer cannot start; the message says why, naming the config key."""


class InboundFactory(TLSMemoryBIOFactory):
    """Accepts peer connections: mutual TLS around a manager-owned connection."""

    noisy = False

    def __init__(self, tls_policy: PeerTLSPolicy, manager: PeerManager, clock: Any) -> None:
        from twisted.internet.protocol import Factory

        inner = Factory.forProtocol(lambda: manager.connection(initiator=False))
        inner.noisy = False
        super().__init__(tls_policy, False, inner, clock)


class PeerService(MultiService):
    """One running peer."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        selected: list[SelectedProvider],
        reactor: Any,
        workers: Any,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.identity = identity
        self.reactor = reactor
        self.workers = workers
        self.started_at = time.time()
        self.bound: list[tuple[str, int]] = []
        self._listening: Any = None
        self.tls_policy = PeerTLSPolicy(identity)
        net = settings.network
        self.manager = PeerManager(
            local_peer_id=identity.peer_id,
            clock=reactor,
            settings=ConnectionSettings(
                keepalive_interval=net.keepalive_interval,
                idle_timeout=net.idle_timeout,
                handshake_timeout=net.handshake_timeout,
                max_frame_size=net.max_frame_size,
                window=net.stream_window,
                max_streams=net.max_streams,
            ),
            policy=NetworkPolicy(
                max_connections=net.max_connections,
                allow=net.allow,
                backoff_initial=net.backoff_initial,
                backoff_max=net.backoff_max,
            ),
            dial=tls_dialer(reactor, self.tls_policy),
            hello=self._hello,
            tls_policy=self.tls_policy,
            route_stream=self._route_stream,
        )
        self.address_book = AddressBook(settings.peer.data_dir / "peers.json", time.time)
        self.manager.add_observer(self.address_book)
        self.manager.known_addresses = self.address_book.addresses_of
        self.events = EventLog(time.time, epoch=f"{int(time.time() * 1000):x}")
        self.manager.add_observer(PeerEvents(self.events))
        self.manager.limit_hit = lambda key, reason: self.events.emit(
            "limit.hit", key=key, reason=reason
        )
        self.relayed: list[str] = []
        self.reachable = settings.peer.listen is not None
        self.router = Router()
        install_core_routes(self.router, ControlView(self))
        self.providers: dict[str, IResourceProvider] = {}
        self.provider_versions: dict[str, str] = {}
        for choice in selected:
            self._build_provider(choice)
        control = settings.control
        self.control = ControlEndpoints(
            reactor=reactor,
            data_dir=settings.peer.data_dir,
            router=self.router,
            events=self.events,
            snapshot=self._snapshot,
            stats=self._stats,
            listen=control.listen,
            web=control.web,
            web_hosts=control.web_hosts,
            metrics_endpoint=control.metrics,
        )
        self.control.setServiceParent(self)

    # -- lifecycle ----------------------------------------------------------------

    def _build_provider(self, choice: SelectedProvider) -> None:
        name = choice.factory.name
        data_dir = self.settings.peer.data_dir / "providers" / name
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        node = ProviderNode(
            name=name,
            manager=self.manager,
            reactor=self.reactor,
            data_dir=data_dir,
            control=self.router.for_provider(name),
            workers=self.workers,
            addresses=self,
            events=self.events,
        )
        provider = choice.factory.build(node, choice.options)
        self.providers[name] = provider
        self.provider_versions[name] = str(choice.factory.version)

    def privilegedStartService(self) -> None:
        """Bind the peer port before anything else, so a busy port stops the start."""
        if self.settings.peer.listen is not None:
            endpoint = serverFromString(self.reactor, self.settings.peer.listen)
            factory = InboundFactory(self.tls_policy, self.manager, self.reactor)
            outcome: list[Any] = []
            endpoint.listen(factory).addBoth(outcome.append)
            if not outcome or isinstance(outcome[0], Failure):
                why = outcome[0].getErrorMessage() if outcome else "listening did not complete"
                raise StartupError(
                    f"cannot listen for peers on {self.settings.peer.listen} ([peer] listen): {why}"
                )
            self._listening_started(outcome[0])
        try:
            self.control.listen()
        except WebListenError as e:
            raise StartupError(str(e)) from None
        super().privilegedStartService()

    def startService(self) -> None:
        """Start providers and the control API, dial configured peers."""
        super().startService()
        self.workers.start()
        self.started_at = time.time()
        for name, provider in list(self.providers.items()):
            d = defer.maybeDeferred(provider.start)
            d.addErrback(self._provider_failed, name)
        self.manager.keep_connected(self.settings.network.peers)
        log.info(
            "peerd {version} started: PeerID {peer_id}; data dir {data_dir}; providers: {providers}",
            version=__version__,
            peer_id=str(self.identity.peer_id),
            data_dir=str(self.settings.peer.data_dir),
            providers=", ".join(f"{n}/{v}" for n, v in sorted(self.provider_versions.items()))
            or "none",
        )
        if self.settings.control.listen is not None:
            log.info("control API on {endpoint}", endpoint=self.settings.control.listen)
        if self.control.web is not None:
            log.info(
                "dashboard on {url} (log in with the URL 'peerctl dashboard' prints)",
                url=self.control.web.base_url(),
            )

    def _listening_started(self, port: Any) -> None:
        self._listening = port
        host = port.getHost()
        self.bound = [(host.host, host.port)]
        log.info(
            "listening for peers on {endpoint}; dialable as {addresses}",
            endpoint=self.settings.peer.listen,
            addresses=" ".join(self.addresses()),
        )

    def _provider_failed(self, failure: Failure, name: str) -> None:
        log.failure("provider {name} failed to start; it is disabled", failure, name=name)
        self.events.emit(
            "provider.error", provider=name, error=failure.getErrorMessage(), fatal=True
        )
        self.providers.pop(name, None)
        self.provider_versions.pop(name, None)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Close peers with GOAWAY, stop providers and the listener, then the rest."""
        yield self.manager.stop()
        if self._listening is not None:
            yield self._listening.stopListening()
        for name, provider in list(self.providers.items()):
            try:
                yield defer.maybeDeferred(provider.stop).addTimeout(10, self.reactor)
            except Exception:
                log.failure("provider {name} failed to stop cleanly", name=name)
        yield super().stopService()
        self.workers.stop()
        log.info("peerd stopped")

    # -- wiring ------------------------------------------------------------------------

    def _hello(self) -> Hello:
        return Hello(
            peer_id=str(self.identity.peer_id),
            agent=AGENT,
            listen=self.all(),
            providers=dict(self.provider_versions),
        )

    def _route_stream(self, stream: Stream) -> None:
        route_to_provider(self.providers, stream)

    def _snapshot(self) -> Any:
        return daemon_snapshot(
            peer_id=str(self.identity.peer_id),
            version=__version__,
            uptime=time.time() - self.started_at,
            sessions=list(self.manager.sessions.values()),
            providers={n: p["status"] for n, p in self._local_providers().items()},
            bytes_in=self.manager.bytes_in,
            bytes_out=self.manager.bytes_out,
            provider_bytes=self.manager.provider_bytes(),
        )

    def _stats(self) -> dict:
        return {
            "status": self.status(),
            "peers": {p["peer_id"]: [p["bytes_in"], p["bytes_out"]] for p in self.peers()},
        }

    # -- IPeerControl ---------------------------------------------------------------------

    def addresses(self) -> list[str]:
        """This peer's direct dialable addresses."""
        return dialable_addresses(self.identity.peer_id, self.bound, self.settings.network.announce)

    def all(self) -> list[str]:
        """Direct and relayed addresses, as announced to peers."""
        return self.addresses() + self.relayed

    def set_relayed(self, addresses: list[str]) -> None:
        """Replace the relayed addresses and tell every connected peer."""
        if addresses != self.relayed:
            self.relayed = list(addresses)
            log.info(
                "announcing relayed addresses: {addresses}", addresses=" ".join(addresses) or "none"
            )
            self.manager.announce(self.all())

    def identity_dict(self) -> dict:
        """``{"peer_id", "addresses"}``."""
        return {"peer_id": str(self.identity.peer_id), "addresses": self.all()}

    def status(self) -> dict:
        """The daemon's state at a glance."""
        sessions = list(self.manager.sessions.values())
        inbound = sum(1 for c in sessions if not c.initiator)
        return {
            "peer_id": str(self.identity.peer_id),
            "agent": AGENT,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": time.time() - self.started_at,
            "data_dir": str(self.settings.peer.data_dir),
            "listen": [self.settings.peer.listen] if self.settings.peer.listen else [],
            "addresses": self.all(),
            "connections": {
                "total": len(sessions),
                "inbound": inbound,
                "outbound": len(sessions) - inbound,
                "max": self.settings.network.max_connections,
            },
            "providers": self._local_providers(),
            "bytes_in": self.manager.bytes_in,
            "bytes_out": self.manager.bytes_out,
        }

    def peers(self) -> list[dict]:
        """One dict per connected peer."""
        return [_peer_dict(conn) for conn in self.manager.sessions.values()]

    def providers_dict(self) -> dict:
        """Local providers and what each connected peer offers."""
        return {
            "local": self._local_providers(),
            "peers": {str(pid): dict(c.info.providers) for pid, c in self.manager.sessions.items()},
        }

    def connect(self, address: str) -> defer.Deferred:
        """Dial ``address``; fires with the peer's dict."""
        return self.manager.connect(PeerAddress.parse(address)).addCallback(_peer_dict)

    def _local_providers(self) -> dict:
        result = {}
        for name, provider in sorted(self.providers.items()):
            try:
                status = provider.status()
            except Exception as e:
                log.failure("provider {name} failed to report status", name=name)
                status = {"error": f"{type(e).__name__}: {e}"}
            result[name] = {"version": self.provider_versions[name], "status": status}
        return result


@implementer(IPeerControl)
class ControlView:
    """The :class:`IPeerControl` face of a :class:`PeerService`, for the control API."""

    def __init__(self, service: PeerService) -> None:
        self._service = service

    def identity(self) -> dict:
        """``{"peer_id", "addresses"}``."""
        return self._service.identity_dict()

    def status(self) -> dict:
        """The daemon's state at a glance."""
        return self._service.status()

    def peers(self) -> list:
        """One dict per connected peer."""
        return self._service.peers()

    def providers(self) -> dict:
        """Local providers and what each connected peer offers."""
        return self._service.providers_dict()

    def connect(self, address: str) -> defer.Deferred:
        """Dial ``address``."""
        return self._service.connect(address)


def _peer_dict(conn: Any) -> dict:
    info = conn.info
    return {
        "peer_id": str(info.peer_id),
        "address": info.address,
        "direction": info.direction,
        "providers": dict(info.providers),
        "listen_addresses": list(info.listen_addresses),
        "agent": info.agent,
        "since": info.connected_since,
        "relay": str(conn.via) if conn.via is not None else None,
        "rtt": conn.rtt,
        "bytes_in": conn.bytes_in,
        "bytes_out": conn.bytes_out,
    }


def ensure_data_dir(path: Path) -> None:
    """Create the data dir (mode 0700) or tighten an existing one."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
