"""
The daily CPU allowance: CPU seconds spent on other peers' jobs per UTC
day, per requesting peer and in total, counted by the shared
:class:`~peerd.ratelimit.PeriodAllowance` (as the relay counts its monthly
bytes).

Counts survive a restart (a JSON file in the provider's data dir, written
atomically by the caller, off the reactor); a new UTC day starts from zero.
A clock stepping back into an earlier day does not grant a second allowance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable

from peerd.ratelimit import UTC_DAY, PeriodAllowance

FORMAT_VERSION = 1


class DailyUsage:
    """
    CPU seconds used today, per peer and in total.

    :param per_peer: seconds one requesting peer may use per day (0: no cap).
    :param total: seconds all requesters together may use per day (0: no cap).
    :param now_wall: the wall clock, which decides the day.
    """

    def __init__(self, per_peer: float, total: float, now_wall: Callable[[], float]) -> None:
        self.counts = PeriodAllowance(UTC_DAY, now_wall, limit=total, per_key_limit=per_peer)

    @property
    def dirty(self) -> bool:
        """Whether the counts changed since the last :meth:`encode`."""
        return self.counts.dirty

    def used(self, peer: Hashable) -> float:
        """Seconds ``peer`` used today."""
        return self.counts.used(peer)

    def peer_exhausted(self, peer: Hashable) -> bool:
        """Whether ``peer`` has used its daily seconds."""
        return self.counts.exhausted(peer)

    def total_exhausted(self) -> bool:
        """Whether all requesters together have used the daily total."""
        return self.counts.exhausted()

    def resets_at(self) -> float:
        """When today's counts restart."""
        return self.counts.resets_at()

    def add(self, peer: Hashable, seconds: float) -> None:
        """Charge ``seconds`` of CPU to ``peer``."""
        self.counts.add(float(seconds), peer)

    def snapshot(self) -> dict:
        """For status displays."""
        counts = self.counts
        return {
            "day": counts.label,
            "cpu_seconds": round(float(counts.used()), 3),
            "limit": counts.limit or None,
            "per_peer_limit": counts.per_key_limit or None,
            "by_peer": {p: round(s, 3) for p, s in sorted(counts.by_key().items())},
            "resets_at": counts.resets_at(),
        }

    def encode(self) -> bytes:
        """The record to save; clears :attr:`dirty`."""
        counts = self.counts
        record = {
            "version": FORMAT_VERSION,
            "day": counts.label,
            "total": float(counts.used()),
            "by_peer": counts.by_key(),
        }
        counts.saved()
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    def load(self, data: bytes) -> None:
        """Take the counts of a saved record (of today or a later day); ignore anything else."""
        try:
            record = json.loads(data)
            day, total, by_peer = record["day"], float(record["total"]), record["by_peer"]
            if record.get("version") != FORMAT_VERSION or not isinstance(by_peer, dict):
                return
            by_peer = {str(p): float(s) for p, s in by_peer.items()}
            UTC_DAY.end(day)  # a day label, or ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        self.counts.restore(day, total, by_peer)
