"""
Monthly accounting of relayed bytes, in the manner of Tor's
``AccountingMax``: bytes relayed in the current calendar month (UTC) are
counted against an allowance; once it is spent, the relay stops opening
circuits and cuts the open ones until the month changes.

The counting is the shared, pure :class:`~peerd.ratelimit.PeriodAllowance`
over :data:`~peerd.ratelimit.UTC_MONTH`; this module keeps it in a file so
that a restart does not grant a fresh allowance.  Saving happens at most
every ``save_every`` seconds (and on :meth:`MonthlyUsage.flush`), so a crash
loses at most that much accounting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from twisted.logger import Logger

from peerd.disk import write_atomically
from peerd.ratelimit import UTC_MONTH, PeriodAllowance

log = Logger()

FORMAT_VERSION = 1
"""The version written in the usage file."""

SAVE_EVERY = 60.0
"""The default for how often (seconds) :meth:`MonthlyUsage.add` saves, at most."""


class DamagedUsageFile(ValueError):
    """The usage file exists but does not hold a usage record."""


def encode_record(month: str, used: int) -> bytes:
    """The usage file's content for ``used`` bytes in ``month`` (``2026-11``)."""
    record = {"version": FORMAT_VERSION, "month": month, "bytes": used}
    return json.dumps(record).encode() + b"\n"


def decode_record(data: bytes) -> tuple[str, int]:
    """``(month, bytes)`` from a usage file's content. :raises DamagedUsageFile:"""
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
        year, mon = int(year_s), int(mon_s)
    except ValueError:
        raise DamagedUsageFile(f"bad month {month!r}") from None
    if not 1 <= mon <= 12 or used < 0:
        raise DamagedUsageFile(f"bad month {month!r} or byte count {used!r}")
    return f"{year:04d}-{mon:02d}", used


def _log_new_month(month: str, used_last_month: float) -> None:
    log.info(
        "relay monthly usage reset for {month} ({used} bytes relayed last month)",
        month=month,
        used=used_last_month,
    )


class MonthlyUsage:
    """
    Bytes relayed in the current UTC calendar month, against ``limit``,
    kept in a file.

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
        self._now = now_wall
        self._save_every = save_every
        self.counter = PeriodAllowance(
            UTC_MONTH, now_wall, limit=limit, on_new_period=_log_new_month
        )
        """The month's count (pure; this object only persists it)."""
        self._saved_at = now_wall()
        if path is not None:
            self._load(path)

    # -- queries ---------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The monthly allowance in bytes; 0 means none."""
        return int(self.counter.limit)

    @property
    def used(self) -> int:
        """Bytes relayed so far this month."""
        return int(self.counter.used())

    def exhausted(self) -> bool:
        """Whether the monthly allowance is spent (never, with no allowance)."""
        return self.counter.exhausted()

    def remaining(self) -> int | None:
        """Bytes left this month, or ``None`` with no allowance."""
        remaining = self.counter.remaining()
        return None if remaining is None else int(remaining)

    def resets_at(self) -> float:
        """The POSIX time at which the count restarts: the start of next UTC month."""
        return self.counter.resets_at()

    def snapshot(self) -> dict:
        """The state for status displays."""
        resets_at = self.resets_at()
        return {
            "month": self.counter.label,
            "bytes": self.used,
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
        self.counter.add(n)
        if self._path is not None and self._now() - self._saved_at >= self._save_every:
            self._save_logged()

    def flush(self) -> None:
        """Save now if anything changed since the last save (e.g. at shutdown)."""
        self.counter.roll()
        if self._path is not None and self.counter.dirty:
            self._save_logged()

    # -- the file ----------------------------------------------------------------

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
            month, used = decode_record(data)
        except DamagedUsageFile as e:
            log.warn(
                "damaged relay usage file {path}, counting from 0: {error}",
                path=str(path),
                error=str(e),
            )
            self.counter.dirty = True
            return
        # A saved month later than the clock's means the clock stepped back: keep it.
        if not self.counter.restore(month, used):
            self.counter.dirty = True  # an old month: start afresh, and say so on disk

    def _save(self) -> None:
        assert self._path is not None
        write_atomically(self._path, encode_record(self.counter.label, self.used), replace=True)
        self.counter.saved()
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
