"""
The relay's one rate, shared by all circuits (``[provider:relay] rate``),
on a :class:`~peerd.ratelimit.TokenBucket`.  Pure: time comes from an
injected ``now``.
"""

from __future__ import annotations

from collections.abc import Callable

from peerd.providers.relay.limits import RelayLimits
from peerd.ratelimit import TokenBucket


class RelayRate:
    """
    The one rate (``[provider:relay] rate``) shared by all circuits.

    Before forwarding ``n`` bytes the glue asks :meth:`delay`; if it is
    positive it pauses reading (``callLater``) and asks again; when it is 0 it
    forwards and calls :meth:`consume`.  Rate 0 means unlimited.
    """

    def __init__(self, limits: RelayLimits, now: Callable[[], float]) -> None:
        self._bucket = TokenBucket(limits.rate, now=now)

    @property
    def rate(self) -> float:
        """Bytes per second; 0 means unlimited."""
        return self._bucket.rate

    def delay(self, n: int) -> float:
        """Seconds to wait before ``n`` bytes may be forwarded; 0 if now."""
        return self._bucket.delay_until_available(n)

    def consume(self, n: int) -> None:
        """Charge ``n`` forwarded bytes (debt allowed, repaid by later waits)."""
        self._bucket.consume(n)

    def try_consume(self, n: int) -> bool:
        """Charge ``n`` bytes if they may pass now, and say whether they did."""
        return self._bucket.try_consume(n)
