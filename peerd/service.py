"""
:class:`PeerService`: the daemon's service tree. It builds one
:class:`~peerd.peer.LocalPeer` from the settings, listens for peers, serves
the control API and starts and stops everything in order.
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
from twisted.python.failure import Failure

from peerd import __version__
from peerd.config import NetworkSettings, Settings
from peerd.control.api import install_core_routes
from peerd.control.endpoints import ControlEndpoints
from peerd.control.views import ControlView
from peerd.control.web import WebListenError
from peerd.identity import Identity
from peerd.net.connection import ConnectionSettings
from peerd.net.manager import NetworkPolicy, tls_dialer
from peerd.peer import LocalPeer
from peerd.plugin_loader import SelectedProvider

log = Logger()


class StartupError(Exception):
    """The peer cannot start; the message says why, naming the config key."""


def connection_settings(net: NetworkSettings) -> ConnectionSettings:
    """The per-connection limits and timers of ``[network]``."""
    return ConnectionSettings(
        keepalive_interval=net.keepalive_interval,
        idle_timeout=net.idle_timeout,
        handshake_timeout=net.handshake_timeout,
        max_frame_size=net.max_frame_size,
        window=net.stream_window,
        max_streams=net.max_streams,
    )


def network_policy(net: NetworkSettings) -> NetworkPolicy:
    """Who may connect and how often to redial, from ``[network]``."""
    return NetworkPolicy(
        max_connections=net.max_connections,
        allow=net.allow,
        backoff_initial=net.backoff_initial,
        backoff_max=net.backoff_max,
    )


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
        self.reactor = reactor
        self.started_at = time.time()
        self._listening: Any = None
        net = settings.network
        self.peer = LocalPeer(
            identity,
            clock=reactor,
            data_dir=settings.peer.data_dir,
            dialer=lambda tls_policy: tls_dialer(reactor, tls_policy),
            workers=workers,
            connection_settings=connection_settings(net),
            policy=network_policy(net),
            announce=net.announce,
            listening=settings.peer.listen is not None,
        )
        self.view = ControlView(
            self.peer,
            uptime=lambda: time.time() - self.started_at,
            listen=settings.peer.listen,
            max_connections=net.max_connections,
        )
        install_core_routes(self.peer.router, self.view)
        for choice in selected:
            self.peer.build_provider(choice.factory, choice.options)
        control = settings.control
        self.control = ControlEndpoints(
            reactor=reactor,
            data_dir=settings.peer.data_dir,
            router=self.peer.router,
            events=self.peer.events,
            snapshot=self.view.snapshot,
            stats=self.view.stats,
            listen=control.listen,
            web=control.web,
            web_hosts=control.web_hosts,
            metrics_endpoint=control.metrics,
        )
        self.control.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """Bind the peer port before anything else, so a busy port stops the start."""
        listen = self.settings.peer.listen
        if listen is not None:
            endpoint = serverFromString(self.reactor, listen)
            outcome: list[Any] = []
            endpoint.listen(self.peer.inbound_factory()).addBoth(outcome.append)
            if not outcome or isinstance(outcome[0], Failure):
                why = outcome[0].getErrorMessage() if outcome else "listening did not complete"
                raise StartupError(f"cannot listen for peers on {listen} ([peer] listen): {why}")
            self._listening_started(outcome[0])
        try:
            self.control.listen()
        except WebListenError as e:
            raise StartupError(str(e)) from None
        super().privilegedStartService()

    def startService(self) -> None:
        """Start providers and the control API, dial configured peers."""
        super().startService()
        self.peer.workers.start()
        self.started_at = time.time()
        self.peer.start_providers()
        self.peer.manager.keep_connected(self.settings.network.peers)
        log.info(
            "peerd {version} started: PeerID {peer_id}; data dir {data_dir}; providers: {providers}",
            version=__version__,
            peer_id=str(self.peer.peer_id),
            data_dir=str(self.settings.peer.data_dir),
            providers=", ".join(f"{n}/{v}" for n, v in sorted(self.peer.provider_versions.items()))
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
        self.peer.addresses.listening_on(host.host, host.port)
        log.info(
            "listening for peers on {endpoint}; dialable as {addresses}",
            endpoint=self.settings.peer.listen,
            addresses=" ".join(self.peer.addresses.direct()),
        )

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Close peers with GOAWAY, stop providers and the listener, then the rest."""
        yield self.peer.manager.stop()
        if self._listening is not None:
            yield self._listening.stopListening()
        yield self.peer.stop_providers()
        yield super().stopService()
        self.peer.workers.stop()
        log.info("peerd stopped")


def ensure_data_dir(path: Path) -> None:
    """Create the data dir (mode 0700) or tighten an existing one."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
