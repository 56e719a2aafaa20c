"""
Events the daemon itself emits (providers emit theirs through
``INode.emit``): peer sessions coming and going, and the metrics snapshot
read at each scrape.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from peerd.control.events import EventLog
from peerd.control.metrics import Snapshot
from peerd.interfaces import IPeerInfo, IPeerObserver


def peer_fields(peer: IPeerInfo) -> dict:
    """What an event says of a peer."""
    relay = getattr(peer, "relay", None)
    return {
        "peer": str(peer.peer_id),
        "address": peer.address,
        "direction": peer.direction,
        "relay": str(relay) if relay is not None else None,
        "agent": peer.agent,
        "providers": dict(peer.providers),
        "since": peer.connected_since,
    }


@implementer(IPeerObserver)
class PeerEvents:
    """Emits ``peer.connected`` and ``peer.disconnected``."""

    def __init__(self, events: EventLog) -> None:
        self._events = events

    def peer_connected(self, peer: IPeerInfo) -> None:
        """A session is up."""
        self._events.emit("peer.connected", **peer_fields(peer))

    def peer_disconnected(self, peer: IPeerInfo, reason: str) -> None:
        """A session ended."""
        self._events.emit(
            "peer.disconnected", peer=str(peer.peer_id), reason=reason, direction=peer.direction
        )


def daemon_snapshot(
    *,
    peer_id: str,
    version: str,
    uptime: float,
    sessions: list[Any],
    providers: dict[str, dict],
    bytes_in: int,
    bytes_out: int,
    provider_bytes: dict[str, tuple[int, int]] | None = None,
) -> Snapshot:
    """A metrics :class:`Snapshot` from the peer sessions and provider statuses."""
    inbound = sum(1 for c in sessions if not c.initiator)
    return Snapshot(
        peer_id=peer_id,
        version=version,
        uptime=uptime,
        connections={"inbound": inbound, "outbound": len(sessions) - inbound},
        relayed=sum(1 for c in sessions if getattr(c, "via", None) is not None),
        streams=sum(int(getattr(c, "stream_count", 0)) for c in sessions),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        provider_bytes=dict(provider_bytes or {}),
        providers=providers,
    )


class StatsTicker:
    """
    Broadcasts ``stats.tick`` (volatile: never buffered) every ``interval``
    seconds while anyone follows the event stream: byte counters, rates and
    provider status, the figures that change all the time.

    :param stats: builds the tick's fields.
    :param watched: whether anyone listens now.
    """

    def __init__(
        self,
        clock: Any,
        events: EventLog,
        stats: Any,
        watched: Any,
        interval: float = 2.0,
    ) -> None:
        self._clock = clock
        self._events = events
        self._stats = stats
        self._watched = watched
        self.interval = interval
        self._call: Any = None

    def start(self) -> None:
        """Start ticking."""
        if self._call is None:
            self._call = self._clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        """Stop ticking."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = self._clock.callLater(self.interval, self._tick)
        if self._watched():
            self._events.broadcast("stats.tick", **self._stats())
