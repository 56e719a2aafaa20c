"""Measuring a rate over sliding windows, for the rate-limit tests."""

from __future__ import annotations

import bisect


def window_rates(events: list[tuple[float, int]], seconds: float, window: float = 10.0):
    """The rate in every ``window`` sliding across the run in quarter-second steps."""
    times = [t for t, _ in events]
    cumulative = [0]
    for _, n in events:
        cumulative.append(cumulative[-1] + n)
    rates = []
    start = 0.0
    while start + window <= seconds + 1e-9:
        lo = bisect.bisect_left(times, start)
        hi = bisect.bisect_left(times, start + window)
        rates.append((cumulative[hi] - cumulative[lo]) / window)
        start += 0.25
    return rates
