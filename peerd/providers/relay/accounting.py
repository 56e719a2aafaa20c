"""
Monthly accounting of relayed bytes, in the manner of Tor's
``AccountingMax``: bytes relayed in the current calendar month (UTC) are
counted against an allowance; once it is spent, the relay stops opening
circuits and cuts the open ones until the month changes.

The count is persisted so that a restart does not grant a fresh allowance.
Saving happens at most every ``save_every`` seconds (and on :meth:`flush`),
so a crash loses at most that much accounting.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from twisted.logger import Logger

from peerd.disk import write_atomically

log = Logger()

FORMAT_VERSION = 1
"""The version written in the usage file."""

SAVE_EVERY = 60.0
"""The default for how often (seconds) :meth:`MonthlyUsage.add` saves, at most."""

Month = tuple[int, int]


def month_of(wall: float) -> Month:
    """The UTC calendar month ``(year, month)`` of the POSIX time ``wall``."""
    t = time.gmtime(wall)
    return (t.tm_year, t.tm_mon)


def month_start(month: Month) -> float:
    """The POSIX time at which ``month`` begins (UTC midnight on the 1st)."""
    year, mon = month
    return float(calendar.timegm((year, mon, 1, 0, 0, 0)))


def next_month(month: Month) -> Month:
    """The month after ``month``."""
    year, mon = month
    return (year + 1, 1) if mon == 12 else (year, mon + 1)


def format_utc(wall: float) -> str:
    """``wall`` as an ISO 8601 UTC timestamp to the second, e.g. ``2026-12-01T00:00:00Z``."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DamagedUsageFile(ValueError):
    """The usage file exists but does not hold a usage record."""


class MonthlyUsage:
    """
    Bytes relayed in the current UTC calendar month, against ``limit``.

    :param path: where the count is kept, or ``None`` to keep it in memory only.
    :param limit: the monthly allowance in bytes; 0 means no allowance
        (unlimited: :meth:`exhausted` is always false).
    :param now_wall: the wall clock (POSIX seconds, e.g. ``time.time``), which
        decides the month.
    :param save_every: the least number of seconds between saves by :meth:`add`.

    The count restarts at 0 when the month advances.  A wall clock that steps
    back into an earlier month does not reset it (that would grant a second
    allowance); bytes keep counting against the later month.
    """

    def __init__(
        self,
        path: Path | None,
        limit: int,
        now_wall: Callable[[], float],
        save_every: float = SAVE_EVERY,
    ) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit!r}")
        self._path = path
        self.limit = limit
        self._now = now_wall
        self._save_every = save_every
        self._month = month_of(now_wall())
        self._used = 0
        self._dirty = False
        self._saved_at = now_wall()
        if path is not None:
            self._load(path)

    # -- queries ---------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes relayed so far this month."""
        self._roll()
        return self._used

    def exhausted(self) -> bool:
        """Whether the monthly allowance is spent (never, with no allowance)."""
        return self.limit > 0 and self.used >= self.limit

    def remaining(self) -> int | None:
        """Bytes left this month, or ``None`` with no allowance."""
        if self.limit == 0:
            return None
        return max(0, self.limit - self.used)

    def resets_at(self) -> float:
        """The POSIX time at which the count restarts: the start of next UTC month."""
        self._roll()
        return month_start(next_month(self._month))

    def snapshot(self) -> dict:
        """The state for status displays."""
        self._roll()
        resets_at = self.resets_at()
        year, mon = self._month
        return {
            "month": f"{year:04d}-{mon:02d}",
            "bytes": self._used,
            "limit": self.limit or None,
            "remaining": self.remaining(),
            "exhausted": self.exhausted(),
            "resets_at": resets_at,
            "resets_in": max(0.0, resets_at - self._now()),
        }

    # -- updates ---------------------------------------------------------------

    def add(self, n: int) -> None:
        """Count ``n`` relayed bytes; save if the last save is old enough."""
        if n < 0:
            raise ValueError(f"cannot add a negative number of bytes: {n!r}")
        self._roll()
        self._used += n
        self._dirty = True
        if self._path is not None and self._now() - self._saved_at >= self._save_every:
            self._save_logged()

    def flush(self) -> None:
        """Save now if anything changed since the last save (e.g. at shutdown)."""
        self._roll()
        if self._path is not None and self._dirty:
            self._save_logged()

    # -- internals -------------------------------------------------------------

    def _roll(self) -> None:
        month = month_of(self._now())
        if month > self._month:
            log.info(
                "relay monthly usage reset for {month} ({used} bytes relayed last month)",
                month=f"{month[0]:04d}-{month[1]:02d}",
                used=self._used,
            )
            self._month = month
            self._used = 0
            self._dirty = True

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warn(
                "cannot read relay usage file {path}, counting from 0: {error}",
                path=str(path),
                error=str(e),
            )
            return
        try:
            month, used = self._parse(data)
        except DamagedUsageFile as e:
            log.warn(
                "damaged relay usage file {path}, counting from 0: {error}",
                path=str(path),
                error=str(e),
            )
            self._dirty = True
            return
        if month >= self._month:
            # A saved month later than the clock's means the clock stepped back: keep it.
            self._month = month
            self._used = used
        else:
            self._dirty = True  # an old month: start afresh, and say so on disk

    @staticmethod
    def _parse(data: bytes) -> tuple[Month, int]:
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise DamagedUsageFile(f"not JSON ({e})") from None
        if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION:
            raise DamagedUsageFile("not a version 1 usage record")
        month, used = record.get("month"), record.get("bytes")
        if not isinstance(month, str) or not isinstance(used, int) or isinstance(used, bool):
            raise DamagedUsageFile("missing or mistyped 'month' or 'bytes'")
        try:
            year_s, mon_s = month.split("-")
            parsed = (int(year_s), int(mon_s))
        except ValueError:
            raise DamagedUsageFile(f"bad month {month!r}") from None
        if not 1 <= parsed[1] <= 12 or used < 0:
            raise DamagedUsageFile(f"bad month {month!r} or byte count {used!r}")
        return parsed, used

    def _save(self) -> None:
        assert self._path is not None
        year, mon = self._month
        record = {"version": FORMAT_VERSION, "month": f"{year:04d}-{mon:02d}", "bytes": self._used}
        write_atomically(self._path, json.dumps(record).encode() + b"\n", replace=True)
        self._dirty = False
        self._saved_at = self._now()

    def _save_logged(self) -> None:
        try:
            self._save()
        except OSError as e:
            self._saved_at = self._now()  # retry after save_every, not on every add
            log.warn(
                "cannot save relay usage file {path}: {error}",
                path=str(self._path),
                error=str(e),
            )
