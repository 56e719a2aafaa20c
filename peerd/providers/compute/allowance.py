"""
The daily CPU allowance: CPU seconds spent on other peers' jobs per UTC
day, per requesting peer and in total, like the relay's monthly bytes.

Counts survive a restart (a JSON file in the provider's data dir, written
atomically by the caller, off the reactor); a new UTC day starts from zero.
A clock stepping back into an earlier day does not grant a second allowance.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Hashable

FORMAT_VERSION = 1


def day_of(wall: float) -> str:
    """The UTC day of POSIX time ``wall``: ``2026-12-02``."""
    return time.strftime("%Y-%m-%d", time.gmtime(wall))


def day_end(day: str) -> float:
    """POSIX time at which ``day`` ends (UTC midnight after it)."""
    year, month, mday = (int(x) for x in day.split("-"))
    return float(calendar.timegm((year, month, mday, 0, 0, 0))) + 86400.0


class DailyUsage:
    """
    CPU seconds used today, per peer and in total.

    :param per_peer: seconds one requesting peer may use per day (0: no cap).
    :param total: seconds all requesters together may use per day (0: no cap).
    :param now_wall: the wall clock, which decides the day.
    """

    def __init__(self, per_peer: float, total: float, now_wall: Callable[[], float]) -> None:
        self.per_peer = per_peer
        self.total_limit = total
        self._now = now_wall
        self.day = day_of(now_wall())
        self.total = 0.0
        self.by_peer: dict[str, float] = {}
        self.dirty = False

    def _roll(self) -> None:
        day = day_of(self._now())
        if day > self.day:
            self.day, self.total, self.by_peer, self.dirty = day, 0.0, {}, True

    def used(self, peer: Hashable) -> float:
        """Seconds ``peer`` used today."""
        self._roll()
        return self.by_peer.get(str(peer), 0.0)

    def peer_exhausted(self, peer: Hashable) -> bool:
        """Whether ``peer`` has used its daily seconds."""
        return self.per_peer > 0 and self.used(peer) >= self.per_peer

    def total_exhausted(self) -> bool:
        """Whether all requesters together have used the daily total."""
        self._roll()
        return self.total_limit > 0 and self.total >= self.total_limit

    def resets_at(self) -> float:
        """When today's counts restart."""
        self._roll()
        return day_end(self.day)

    def add(self, peer: Hashable, seconds: float) -> None:
        """Charge ``seconds`` of CPU to ``peer``."""
        self._roll()
        key = str(peer)
        self.by_peer[key] = self.by_peer.get(key, 0.0) + seconds
        self.total += seconds
        self.dirty = True

    def snapshot(self) -> dict:
        """For status displays."""
        self._roll()
        return {
            "day": self.day,
            "cpu_seconds": round(self.total, 3),
            "limit": self.total_limit or None,
            "per_peer_limit": self.per_peer or None,
            "by_peer": {p: round(s, 3) for p, s in sorted(self.by_peer.items())},
            "resets_at": self.resets_at(),
        }

    def encode(self) -> bytes:
        """The record to save; clears :attr:`dirty`."""
        self._roll()
        self.dirty = False
        record = {
            "version": FORMAT_VERSION,
            "day": self.day,
            "total": self.total,
            "by_peer": self.by_peer,
        }
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    def load(self, data: bytes) -> None:
        """Take the counts of a saved record (of today or a later day); ignore anything else."""
        try:
            record = json.loads(data)
            day, total, by_peer = record["day"], float(record["total"]), record["by_peer"]
            if record.get("version") != FORMAT_VERSION or not isinstance(by_peer, dict):
                return
            by_peer = {str(p): float(s) for p, s in by_peer.items()}
        except (ValueError, KeyError, TypeError):
            return
        self._roll()
        if isinstance(day, str) and day >= self.day:
            self.day, self.total, self.by_peer = day, total, by_peer
