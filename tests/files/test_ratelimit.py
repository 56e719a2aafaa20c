"""Tests for peerd.ratelimit."""

from __future__ import annotations

import calendar
from collections.abc import Callable

import pytest
from rate_helpers import window_rates
from twisted.internet.task import Clock

from peerd.ratelimit import (
    MIN_BURST,
    UTC_DAY,
    UTC_MONTH,
    Meter,
    PeriodAllowance,
    RateLimiter,
    TokenBucket,
    default_burst,
    format_utc,
)

KiB = 1024
MB = 1_000_000
STEP = 0.001


def greedy_run(
    clock: Clock, take: Callable[[], bool], block: int, seconds: float
) -> list[tuple[float, int]]:
    """Consume ``block`` bytes whenever allowed, advancing the clock 1 ms at a time."""
    events = []
    for _ in range(round(seconds / STEP)):
        while take():
            events.append((clock.seconds(), block))
        clock.advance(STEP)
    return events


@pytest.mark.parametrize("rate", [1 * MB, 20 * MB])
@pytest.mark.parametrize("block", [16 * KiB, 256 * KiB])
def test_greedy_consumer_holds_rate_in_every_window(rate, block):
    """A greedy consumer gets the configured rate within 10% over every 10 s window of a 60 s run."""
    clock = Clock()
    bucket = TokenBucket(rate, now=clock.seconds)
    events = greedy_run(clock, lambda: bucket.try_consume(block), block, 60)
    rates = window_rates(events, 60)
    assert len(rates) > 150
    for measured in rates:
        assert abs(measured - rate) <= 0.10 * rate, measured


def test_sleeping_consumer_holds_rate():
    """A consumer that sleeps exactly ``delay_until_available`` between blocks gets the rate."""
    clock = Clock()
    bucket = TokenBucket(5 * MB, now=clock.seconds)
    sent = 0
    while clock.seconds() < 30:
        delay = bucket.delay_until_available(256 * KiB)
        if delay:
            clock.advance(delay)
        assert bucket.try_consume(256 * KiB)
        sent += 256 * KiB
    assert abs(sent / 30 - 5 * MB) <= 0.05 * 5 * MB


def test_default_burst_is_quarter_second_but_at_least_one_slice():
    """The default burst is a quarter second of traffic, never less than 64 KiB."""
    assert TokenBucket(20 * MB).burst == 5 * MB
    assert TokenBucket(100 * KiB).burst == MIN_BURST == default_burst(1)
    assert TokenBucket(MB, burst=4096).burst == 4096


def test_block_larger_than_burst_passes_when_full_and_leaves_debt():
    """A request above the burst passes on a full bucket and the long-run rate still holds."""
    clock = Clock()
    bucket = TokenBucket(MB, now=clock.seconds)
    block = 8 * 1024 * KiB
    assert bucket.try_consume(block)
    assert not bucket.try_consume(1)
    assert bucket.available() < 0
    events = greedy_run(clock, lambda: bucket.try_consume(block), block, 100)
    total = sum(n for _, n in events)
    assert abs(total / 100 - MB) <= 0.10 * MB


def test_unlimited_never_delays():
    """Rate 0 lets everything through at once and keeps no account."""
    bucket = TokenBucket(0, now=lambda: 0.0)
    assert bucket.unlimited
    for _ in range(1000):
        assert bucket.try_consume(10**12)
        assert bucket.delay_until_available(10**12) == 0
    bucket.consume(10**15)
    assert bucket.try_consume(1)
    limiter = RateLimiter(0, 0, now=lambda: 0.0)
    assert limiter.try_consume("a", 10**12)
    assert limiter.delay("a", 10**12) == 0
    limiter.consume("a", 10**15)
    assert len(limiter) == 0


def test_debt_delays_later_calls():
    """Bytes charged with ``consume`` put the bucket in debt that later calls wait out."""
    clock = Clock()
    bucket = TokenBucket(MB, now=clock.seconds)
    bucket.consume(2 * MB)
    assert not bucket.try_consume(16 * KiB)
    delay = bucket.delay_until_available(16 * KiB)
    assert delay == pytest.approx((2 * MB - default_burst(MB) + 16 * KiB) / MB)
    clock.advance(delay * 0.99)
    assert not bucket.try_consume(16 * KiB)
    clock.advance(delay * 0.01)
    assert bucket.try_consume(16 * KiB)


def test_set_rate():
    """Changing the rate keeps credit up to the new burst; unlimited-to-limited starts full."""
    clock = Clock()
    bucket = TokenBucket(0, now=clock.seconds)
    bucket.set_rate(MB)
    assert bucket.available() == default_burst(MB)
    bucket.set_rate(20 * MB)
    assert bucket.available() == default_burst(MB)
    clock.advance(1)
    assert bucket.available() == 5 * MB
    bucket.set_rate(MB)
    assert bucket.available() == default_burst(MB)
    with pytest.raises(ValueError):
        bucket.set_rate(-1)
    with pytest.raises(ValueError):
        TokenBucket(MB, burst=0)


@pytest.mark.parametrize("active", [1, 2, 4])
def test_global_and_per_key_limits_hold_together(active):
    """With a global 8 MB/s and 3 MB/s per key, neither limit is exceeded in any window."""
    clock = Clock()
    limiter = RateLimiter(8 * MB, 3 * MB, now=clock.seconds)
    keys = [f"peer{i}" for i in range(active)]
    block = 16 * KiB
    events: dict[str, list[tuple[float, int]]] = {k: [] for k in keys}
    for step in range(round(60 / STEP)):
        progress = True
        while progress:
            progress = False
            for i in range(active):
                key = keys[(step + i) % active]
                if limiter.try_consume(key, block):
                    events[key].append((clock.seconds(), block))
                    progress = True
        clock.advance(STEP)
    everything = sorted(e for evs in events.values() for e in evs)
    expected = min(8 * MB, 3 * MB * active)
    for measured in window_rates(everything, 60):
        assert abs(measured - expected) <= 0.10 * expected
    for key in keys:
        for measured in window_rates(events[key], 60):
            assert measured <= 1.10 * 3 * MB
    assert len(limiter) == active


def test_try_consume_takes_from_both_or_neither():
    """A refusal by either bucket charges neither of them."""
    clock = Clock()
    limiter = RateLimiter(10 * MB, MB, now=clock.seconds)
    assert limiter.try_consume("a", default_burst(MB))
    for _ in range(1000):
        assert not limiter.try_consume("a", 16 * KiB)  # "a" is empty, global is not
    assert limiter.try_consume("b", default_burst(MB))

    limiter = RateLimiter(MB, MB, now=clock.seconds)
    limiter.consume("a", default_burst(MB))  # global now empty
    for _ in range(1000):
        assert not limiter.try_consume("b", 16 * KiB)  # global refuses, "b" is full
    assert limiter.delay("b", default_burst(MB)) == pytest.approx(default_burst(MB) / MB)
    clock.advance(default_burst(MB) / MB)
    assert limiter.try_consume("b", default_burst(MB))


def test_delay_is_the_larger_of_both_and_forget_resets_a_key():
    """``delay`` waits for the slower bucket; ``forget`` drops a key's debt."""
    clock = Clock()
    limiter = RateLimiter(10 * MB, MB, now=clock.seconds)
    limiter.consume("a", 2 * MB)
    assert limiter.delay("a", 1) == pytest.approx((2 * MB - default_burst(MB) + 1) / MB)
    assert limiter.delay("b", 1) == 0
    limiter.consume("b", MB)  # the global bucket (2.5 MB burst) is now 0.5 MB in debt
    assert limiter.delay("c", 1) == pytest.approx((0.5 * MB + 1) / (10 * MB))
    clock.advance(0.06)
    assert limiter.delay("c", 1) == 0
    assert limiter.delay("a", 1) > 1
    limiter.forget("a")
    assert limiter.delay("a", 1) == 0
    limiter.set_per_key_rate(0)
    limiter.set_rate(0)
    assert limiter.try_consume("a", 10**12)


def test_meter_tracks_steady_rate_and_decays_to_zero():
    """A meter reads a steady 1 MB/s, including while young, then falls to 0 after the window."""
    clock = Clock()
    clock.advance(1000.3)
    meter = Meter(10.0, now=clock.seconds)
    assert meter.rate() == 0
    for i in range(300):
        meter.add(100_000)
        clock.advance(0.1)
        if i == 25:
            assert meter.rate() == pytest.approx(MB, rel=0.05)
    assert meter.rate() == pytest.approx(MB, rel=0.05)
    assert meter.total == 30 * MB
    clock.advance(5)
    assert 0.3 * MB < meter.rate() < 0.7 * MB
    clock.advance(6)
    assert meter.rate() == 0
    clock.advance(1000)
    meter.add(5)
    assert meter.rate() > 0


def test_meter_window_must_be_a_second_or_more():
    """A window under one second cannot be bucketed per second."""
    with pytest.raises(ValueError):
        Meter(0.5, now=lambda: 0.0)


# -- allowances per calendar period --------------------------------------------------------

NOV_30_LATE = float(calendar.timegm((2026, 11, 30, 23, 0, 0)))
DEC_1 = float(calendar.timegm((2026, 12, 1, 0, 0, 0)))


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_calendar_periods_label_and_end():
    assert UTC_DAY.label(NOV_30_LATE) == "2026-11-30"
    assert UTC_DAY.end("2026-11-30") == DEC_1
    assert UTC_MONTH.label(NOV_30_LATE) == "2026-11"
    assert UTC_MONTH.end("2026-11") == DEC_1
    assert UTC_MONTH.end("2026-12") == float(calendar.timegm((2027, 1, 1, 0, 0, 0)))
    assert format_utc(DEC_1) == "2026-12-01T00:00:00Z"


def test_period_allowance_counts_in_total_and_per_key_against_limits():
    wall = Wall(NOV_30_LATE)
    counts = PeriodAllowance(UTC_DAY, wall, limit=15, per_key_limit=10)
    assert not counts.dirty and counts.remaining() == 15
    counts.add(10.5, "a")
    assert counts.dirty and counts.exhausted("a") and not counts.exhausted("b")
    assert not counts.exhausted() and counts.used("a") == 10.5
    counts.add(5, "b")
    assert counts.exhausted() and counts.remaining() == 0
    assert counts.by_key() == {"a": 10.5, "b": 5}
    assert counts.resets_at() == DEC_1
    counts.saved()
    assert not counts.dirty


def test_period_allowance_restarts_with_a_new_period_but_not_a_clock_stepping_back():
    wall = Wall(NOV_30_LATE)
    new_periods = []
    counts = PeriodAllowance(
        UTC_MONTH, wall, limit=100, on_new_period=lambda *args: new_periods.append(args)
    )
    counts.add(100)
    assert counts.exhausted()
    wall.t = DEC_1
    assert counts.used() == 0 and not counts.exhausted() and counts.label == "2026-12"
    assert new_periods == [("2026-12", 100)] and counts.dirty
    counts.add(7)
    wall.t = NOV_30_LATE  # the clock steps back: still December's count
    assert counts.used() == 7 and counts.label == "2026-12"


def test_period_allowance_without_limits_is_never_exhausted():
    counts = PeriodAllowance(UTC_MONTH, Wall(NOV_30_LATE))
    counts.add(10**15, "a")
    assert not counts.exhausted() and not counts.exhausted("a") and counts.remaining() is None


def test_period_allowance_restores_counts_of_this_or_a_later_period_only():
    counts = PeriodAllowance(UTC_DAY, Wall(NOV_30_LATE))
    assert not counts.restore("2026-11-29", 50.0, {"a": 50.0})
    assert counts.used() == 0
    assert counts.restore("2026-11-30", 20.0, {"a": 20.0})
    assert counts.used("a") == 20.0 and not counts.dirty
    assert counts.restore("2026-12-01", 3.0)  # saved by a clock that was ahead
    assert counts.label == "2026-12-01" and counts.used() == 3.0 and counts.used("a") == 0
