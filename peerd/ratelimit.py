"""
Rate limits, measured rates and allowances: token buckets, a
global-plus-per-peer limiter, a sliding-window meter, and allowances per
UTC calendar period (:class:`PeriodAllowance`: a relay's bytes per month,
a compute worker's CPU seconds per day).

Everything here is a plain object driven by an injected clock (``now``, a
``Callable[[], float]`` such as ``reactor.seconds`` or ``Clock().seconds``); no
timers are scheduled.  A caller that is told to wait (``delay``) schedules its
own ``callLater`` and asks again.

**Burst.**  A bucket holds at most ``burst`` bytes of credit.  The default is
``max(rate * 0.25 s, 64 KiB)``:

- a quarter of a second of traffic means a greedy sender gets at most
  ``rate * W + burst`` bytes in any window of ``W`` seconds, so over 10 s the
  excess is at most 2.5 % of the configured rate (for rates of at least
  about 256 KiB/s, where the 64 KiB floor does not dominate);
- uploads under a limit go out in slices of 1/20 s of traffic (16 KiB to
  1 MiB, see ``uploads``), each charged as it leaves, so they add at most a
  slice to a window;
- downloads charge whole blocks when they are requested, so a window can
  hold up to one block more: over 10 s that stays within 10 % for rates of
  at least one block per second (256 KiB/s for content up to 256 MiB,
  1 MiB/s at 1 GiB).

A request larger than ``burst`` (an 8 MiB block under a small burst) is never
starved: it passes once the bucket is full and leaves the bucket in debt, which
later requests repay.  Long-run throughput therefore still equals ``rate``.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime

MIN_BURST = 64 * 1024
"""The smallest default burst, in bytes."""

BURST_SECONDS = 0.25
"""The default burst, as seconds of traffic at the configured rate."""

_EPSILON = 1e-3
"""Bytes of slack when comparing credit, absorbing float rounding of the clock."""


def default_burst(rate: float) -> float:
    """The burst a bucket of ``rate`` bytes/s gets unless told otherwise."""
    return max(rate * BURST_SECONDS, float(MIN_BURST))


def _check_rate(rate: float) -> None:
    if not rate >= 0 or math.isinf(rate):
        raise ValueError(f"rate must be a finite number >= 0, not {rate!r}")


class TokenBucket:
    """
    A token bucket of ``rate`` bytes per second holding at most ``burst`` bytes.

    ``rate == 0`` means unlimited: every call succeeds at once and nothing is
    counted.  The bucket starts full.  Credit may go negative (debt) through
    :meth:`consume`, for bytes that were already sent or received.

    Every method is O(1).
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst is not None and not burst > 0:
            raise ValueError(f"burst must be positive, not {burst!r}")
        self._now = now
        self._rate = 0.0
        self._burst_given = burst
        self._burst = 0.0
        self._tokens = 0.0
        self._last = now()
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        """Bytes per second; 0 means unlimited."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most credit the bucket holds, in bytes."""
        return self._burst

    @property
    def unlimited(self) -> bool:
        """Whether this bucket never limits."""
        return self._rate == 0

    def available(self) -> float:
        """The credit now, in bytes (negative while in debt; ``inf`` if unlimited)."""
        if self._rate == 0:
            return math.inf
        self._refill()
        return self._tokens

    def set_rate(self, rate: float) -> None:
        """
        Change the rate from now on.  Credit earned so far is kept, up to the new
        burst; a bucket that was unlimited starts full.
        """
        _check_rate(rate)
        was_unlimited = self._rate == 0
        self._refill()
        self._rate = float(rate)
        if rate == 0:
            return
        self._burst = (
            float(self._burst_given) if self._burst_given is not None else default_burst(rate)
        )
        self._tokens = self._burst if was_unlimited else min(self._tokens, self._burst)

    def can_consume(self, n: float) -> bool:
        """Whether :meth:`try_consume` of ``n`` bytes would succeed now."""
        if self._rate == 0:
            return True
        self._refill()
        return self._tokens + _EPSILON >= self._needed(n)

    def try_consume(self, n: float) -> bool:
        """
        Take ``n`` bytes of credit if there is enough, and say whether it did.

        "Enough" is ``n`` bytes, or a full bucket when ``n`` exceeds the burst
        (the rest becomes debt).
        """
        if not self.can_consume(n):
            return False
        if self._rate != 0:
            self._tokens -= n
        return True

    def delay_until_available(self, n: float) -> float:
        """Seconds until :meth:`try_consume` of ``n`` bytes would succeed; 0 if now."""
        if self._rate == 0:
            return 0.0
        self._refill()
        short = self._needed(n) - self._tokens
        if short <= _EPSILON:
            return 0.0
        return short / self._rate

    def consume(self, n: float) -> None:
        """Take ``n`` bytes unconditionally, going into debt if need be."""
        if self._rate == 0:
            return
        self._refill()
        self._tokens -= n

    def _needed(self, n: float) -> float:
        return min(n, self._burst)

    def _refill(self) -> None:
        t = self._now()
        if t > self._last:
            if self._rate:
                self._tokens = min(self._burst, self._tokens + (t - self._last) * self._rate)
            self._last = t


class RateLimiter:
    """
    A global limit plus a limit per key (per peer), enforced together.

    ``rate`` is the global limit and ``per_key_rate`` each key's own limit, in
    bytes per second; 0 means unlimited.  Per-key buckets are created on first
    use and dropped by :meth:`forget`.  Every method is O(1).
    """

    def __init__(
        self,
        rate: float = 0,
        per_key_rate: float = 0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self._global = TokenBucket(rate, now=now)
        self._per_key_rate = 0.0
        self._keys: dict[Hashable, TokenBucket] = {}
        self.set_per_key_rate(per_key_rate)

    @property
    def rate(self) -> float:
        """The global limit in bytes per second; 0 means unlimited."""
        return self._global.rate

    @property
    def per_key_rate(self) -> float:
        """Each key's limit in bytes per second; 0 means unlimited."""
        return self._per_key_rate

    def set_rate(self, rate: float) -> None:
        """Change the global limit."""
        self._global.set_rate(rate)

    def set_per_key_rate(self, rate: float) -> None:
        """Change every key's limit, for existing keys too."""
        _check_rate(rate)
        self._per_key_rate = float(rate)
        if rate == 0:
            self._keys.clear()
        for bucket in self._keys.values():
            bucket.set_rate(rate)

    def try_consume(self, key: Hashable, n: float) -> bool:
        """Take ``n`` bytes from both the global and ``key``'s bucket, or from neither."""
        bucket = self._bucket(key)
        if not self._global.can_consume(n) or (bucket is not None and not bucket.can_consume(n)):
            return False
        if bucket is not None:
            bucket.consume(n)
        self._global.consume(n)
        return True

    def delay(self, key: Hashable, n: float) -> float:
        """Seconds until both buckets have ``n`` bytes for ``key``; 0 if now."""
        bucket = self._bucket(key)
        own = bucket.delay_until_available(n) if bucket is not None else 0.0
        return max(self._global.delay_until_available(n), own)

    def consume(self, key: Hashable, n: float) -> None:
        """Charge ``n`` bytes to both buckets unconditionally (debt allowed)."""
        bucket = self._bucket(key)
        if bucket is not None:
            bucket.consume(n)
        self._global.consume(n)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``'s bucket (the peer went away); a later use starts it afresh."""
        self._keys.pop(key, None)

    def __len__(self) -> int:
        """How many per-key buckets exist."""
        return len(self._keys)

    def _bucket(self, key: Hashable) -> TokenBucket | None:
        if self._per_key_rate == 0:
            return None
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = self._keys[key] = TokenBucket(self._per_key_rate, now=self._now)
        return bucket


class Meter:
    """
    The measured rate of a byte stream over a sliding window, in bytes/s.

    Bytes are counted in one-second buckets; :meth:`rate` is the sum of the
    buckets in the last ``window`` seconds divided by the time they span (or by
    the meter's age, while it is younger than the window).  :meth:`add` and
    :meth:`rate` are O(1) amortized: each second's bucket is cleared once.
    """

    def __init__(self, window: float = 10.0, now: Callable[[], float] = time.monotonic) -> None:
        if not window >= 1:
            raise ValueError(f"window must be at least one second, not {window!r}")
        self._now = now
        self._size = int(round(window))
        self._buckets = [0] * self._size
        self._start = now()
        self._second = math.floor(self._start)
        self._sum = 0
        self.total = 0
        """Every byte ever added."""

    @property
    def window(self) -> int:
        """The window, in whole seconds."""
        return self._size

    def add(self, n: int) -> None:
        """Count ``n`` bytes transferred now."""
        self._advance()
        self._buckets[self._second % self._size] += n
        self._sum += n
        self.total += n

    def rate(self) -> float:
        """Bytes per second over the window; 0 when nothing moved in it."""
        t = self._advance()
        if self._sum == 0:
            return 0.0
        span = (self._size - 1) + (t - self._second)
        span = min(span, t - self._start)
        return self._sum / max(span, 1.0)

    def _advance(self) -> float:
        t = self._now()
        second = math.floor(t)
        if second > self._second:
            for s in range(self._second + 1, min(second, self._second + self._size) + 1):
                i = s % self._size
                self._sum -= self._buckets[i]
                self._buckets[i] = 0
            self._second = second
        return t


# -- allowances per calendar period -------------------------------------------------------


def format_utc(wall: float) -> str:
    """``wall`` as an ISO 8601 UTC timestamp to the second, e.g. ``2026-12-01T00:00:00Z``."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CalendarPeriod:
    """
    A kind of UTC calendar period: :attr:`label` names the period a POSIX
    time falls in (labels sort in time order), :attr:`end` says when a
    labelled period ends.
    """

    name: str
    label: Callable[[float], str]
    end: Callable[[str], float]


def _day_label(wall: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(wall))


def _day_end(label: str) -> float:
    year, month, mday = (int(x) for x in label.split("-"))
    return float(calendar.timegm((year, month, mday, 0, 0, 0))) + 86400.0


def _month_label(wall: float) -> str:
    t = time.gmtime(wall)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def _month_end(label: str) -> float:
    year, month = (int(x) for x in label.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


UTC_DAY = CalendarPeriod("day", _day_label, _day_end)
"""UTC days, labelled ``2026-12-02``."""

UTC_MONTH = CalendarPeriod("month", _month_label, _month_end)
"""UTC calendar months, labelled ``2026-12``."""


class PeriodAllowance:
    """
    What was used in the current calendar period (bytes relayed this month,
    CPU seconds lent today), in total and per key, against allowances.

    A plain object: the wall clock (``now_wall``, POSIX seconds such as
    ``time.time``) is injected and decides the period; saving the counts is
    the caller's (:attr:`dirty`, :meth:`restore`).

    The counts restart at 0 when the period advances.  A wall clock that
    steps back into an earlier period does not reset them (that would grant
    a second allowance): use keeps counting against the later period.

    :param limit: the total allowance per period; 0 means none (never exhausted).
    :param per_key_limit: each key's allowance per period; 0 means none.
    :param on_new_period: called with the new period's label and the
        previous period's total when the counts restart.
    """

    def __init__(
        self,
        period: CalendarPeriod,
        now_wall: Callable[[], float],
        *,
        limit: float = 0,
        per_key_limit: float = 0,
        on_new_period: Callable[[str, float], object] | None = None,
    ) -> None:
        self.period = period
        self.limit = limit
        self.per_key_limit = per_key_limit
        self._now = now_wall
        self._on_new_period = on_new_period
        self._label = period.label(now_wall())
        self._total: float = 0
        self._by_key: dict[str, float] = {}
        self.dirty = False
        """Whether the counts changed since :meth:`saved` (or since creation)."""

    @property
    def label(self) -> str:
        """The current period's label."""
        self.roll()
        return self._label

    def used(self, key: Hashable | None = None) -> float:
        """Used this period: in total, or by ``key``."""
        self.roll()
        return self._total if key is None else self._by_key.get(str(key), 0)

    def by_key(self) -> dict[str, float]:
        """Each key's use this period (a copy)."""
        self.roll()
        return dict(self._by_key)

    def exhausted(self, key: Hashable | None = None) -> bool:
        """Whether the total allowance (or ``key``'s) is spent; never without one."""
        limit = self.limit if key is None else self.per_key_limit
        return limit > 0 and self.used(key) >= limit

    def remaining(self) -> float | None:
        """What is left of the total allowance this period, or ``None`` without one."""
        if self.limit == 0:
            return None
        return max(0, self.limit - self.used())

    def resets_at(self) -> float:
        """The POSIX time at which the counts restart: the end of the current period."""
        self.roll()
        return self.period.end(self._label)

    def add(self, amount: float, key: Hashable | None = None) -> None:
        """Count ``amount`` used now (by ``key``, if given, and in the total)."""
        self.roll()
        if key is not None:
            name = str(key)
            self._by_key[name] = self._by_key.get(name, 0) + amount
        self._total += amount
        self.dirty = True

    def restore(self, label: str, total: float, by_key: dict[str, float] | None = None) -> bool:
        """
        Take saved counts for period ``label`` if it is the current period
        or a later one (the clock stepped back); False, keeping the counts,
        for an earlier period.
        """
        self.roll()
        if label < self._label:
            return False
        self._label, self._total, self._by_key = label, total, dict(by_key or {})
        return True

    def saved(self) -> None:
        """The counts as they are now have been saved: clear :attr:`dirty`."""
        self.dirty = False

    def roll(self) -> None:
        """Start a new period if the clock has reached one."""
        label = self.period.label(self._now())
        if label > self._label:
            if self._on_new_period is not None:
                self._on_new_period(label, self._total)
            self._label, self._total, self._by_key = label, 0, {}
            self.dirty = True
