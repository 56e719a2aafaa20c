"""
Reservations: which unreachable peers hold a slot on this relay, and until
when (libp2p circuit relay v2's RESERVE).  Pure: time comes from an
injected ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from peerd.providers.relay.limits import (
    NOT_SERVING,
    RESERVATION_LIMIT,
    Refused,
    RelayLimits,
    limit_refused,
)


class ReservationTable:
    """
    Which peers hold a reservation, and until when.  At most one per peer.

    A reservation is live while ``now() < expiry``.  Expired entries stop
    counting at once (:meth:`has`, :meth:`reserve`) and are removed by
    :meth:`expire`, which the glue calls from time to time.
    """

    def __init__(self, limits: RelayLimits, now: Callable[[], float]) -> None:
        self._limits = limits
        self._now = now
        self._expiry: dict[Hashable, float] = {}
        self._serving = True

    @property
    def serving(self) -> bool:
        """False after :meth:`stop`."""
        return self._serving

    def reserve(self, peer: Hashable) -> float:
        """
        Grant or renew ``peer``'s reservation and return its new expiry time.

        :raises Refused: ``reservation-limit`` when every slot is held by another
            peer; ``not-serving`` after :meth:`stop`.
        """
        if not self._serving:
            raise Refused(NOT_SERVING, "this relay is not serving")
        self.expire()
        if peer not in self._expiry and len(self._expiry) >= self._limits.max_reservations:
            raise limit_refused(
                RESERVATION_LIMIT,
                f"all {self._limits.max_reservations} reservation slots are taken",
            )
        expiry = self._now() + self._limits.reservation_seconds
        self._expiry[peer] = expiry
        return expiry

    def drop(self, peer: Hashable) -> None:
        """Cancel ``peer``'s reservation, if it has one."""
        self._expiry.pop(peer, None)

    def has(self, peer: Hashable) -> bool:
        """Whether ``peer`` holds a live (unexpired) reservation."""
        expiry = self._expiry.get(peer)
        return expiry is not None and self._now() < expiry

    def expires_at(self, peer: Hashable) -> float | None:
        """When ``peer``'s live reservation expires, or ``None`` if it has none."""
        return self._expiry.get(peer) if self.has(peer) else None

    def expire(self) -> list[Hashable]:
        """Remove the reservations that have expired and return their peers."""
        t = self._now()
        gone = [peer for peer, expiry in self._expiry.items() if t >= expiry]
        for peer in gone:
            del self._expiry[peer]
        return gone

    def stop(self) -> list[Hashable]:
        """Drop every reservation and refuse new ones (``not-serving``); return the peers."""
        self._serving = False
        peers = list(self._expiry)
        self._expiry.clear()
        return peers

    def __len__(self) -> int:
        """How many live reservations there are."""
        return sum(1 for peer in self._expiry if self.has(peer))

    def snapshot(self) -> list[dict]:
        """The live reservations, soonest expiry first: ``peer`` and ``expires_in`` (s)."""
        t = self._now()
        return [
            {"peer": str(peer), "expires_in": expiry - t}
            for peer, expiry in sorted(self._expiry.items(), key=lambda item: item[1])
            if t < expiry
        ]
