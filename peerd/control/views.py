"""
The shapes of the core API answers (``/api/v1/status``, ``peers``,
``providers``, ``id``), and of the dashboard's snapshot and stats, made from
a :class:`~peerd.peer.LocalPeer`. Documented in ``docs/api.rst``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from zope.interface import implementer

from peerd import __version__
from peerd.control.core_events import daemon_snapshot
from peerd.interfaces import IPeerControl
from peerd.peerid import PeerAddress

if TYPE_CHECKING:
    from peerd.peer import LocalPeer


def peer_dict(conn: Any) -> dict:
    """One connected peer, as ``GET /api/v1/peers`` lists it."""
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


@implementer(IPeerControl)
class ControlView:
    """
    The :class:`IPeerControl` face of a running peer, for the control API.

    :param peer: the peer.
    :param uptime: seconds since the daemon started.
    :param listen: the ``[peer] listen`` endpoint, or None.
    :param max_connections: ``[network] max_connections``.
    """

    def __init__(
        self,
        peer: LocalPeer,
        *,
        uptime: Callable[[], float],
        listen: str | None,
        max_connections: int,
    ) -> None:
        self._peer = peer
        self._uptime = uptime
        self._listen = listen
        self._max_connections = max_connections

    def identity(self) -> dict:
        """``{"peer_id", "addresses"}``."""
        return {"peer_id": str(self._peer.peer_id), "addresses": self._peer.addresses.all()}

    def status(self) -> dict:
        """The daemon's state at a glance."""
        peer = self._peer
        manager = peer.manager
        sessions = list(manager.sessions.values())
        inbound = sum(1 for c in sessions if not c.initiator)
        return {
            "peer_id": str(peer.peer_id),
            "agent": peer.agent,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": self._uptime(),
            "data_dir": str(peer.data_dir),
            "listen": [self._listen] if self._listen else [],
            "addresses": peer.addresses.all(),
            "connections": {
                "total": len(sessions),
                "inbound": inbound,
                "outbound": len(sessions) - inbound,
                "max": self._max_connections,
            },
            "providers": peer.provider_statuses(),
            "bytes_in": manager.bytes_in,
            "bytes_out": manager.bytes_out,
        }

    def peers(self) -> list:
        """One dict per connected peer."""
        return [peer_dict(conn) for conn in self._peer.manager.sessions.values()]

    def providers(self) -> dict:
        """Local providers and what each connected peer offers."""
        sessions = self._peer.manager.sessions
        return {
            "local": self._peer.provider_statuses(),
            "peers": {str(pid): dict(c.info.providers) for pid, c in sessions.items()},
        }

    def connect(self, address: str) -> defer.Deferred:
        """Dial ``address``; fires with the peer's dict."""
        return self._peer.manager.connect(PeerAddress.parse(address)).addCallback(peer_dict)

    def snapshot(self) -> Any:
        """The figures ``/metrics`` exports."""
        peer = self._peer
        manager = peer.manager
        return daemon_snapshot(
            peer_id=str(peer.peer_id),
            version=__version__,
            uptime=self._uptime(),
            sessions=list(manager.sessions.values()),
            providers={n: p["status"] for n, p in peer.provider_statuses().items()},
            bytes_in=manager.bytes_in,
            bytes_out=manager.bytes_out,
            provider_bytes=manager.provider_bytes(),
        )

    def stats(self) -> dict:
        """What the event stream's ``stats.tick`` carries."""
        return {
            "status": self.status(),
            "peers": {p["peer_id"]: [p["bytes_in"], p["bytes_out"]] for p in self.peers()},
        }
