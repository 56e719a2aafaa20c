"""
What a relay lends (:class:`RelayLimits`, the ``[provider:relay]`` options)
and how it says no (:class:`Refused`, its codes, and the stop codes of a
cut circuit).

The relay's bookkeeping is modelled on libp2p circuit relay v2.  A peer that
cannot be dialled *reserves* a slot (:mod:`.reservations`); other peers then
open *circuits* to it through the relay (:mod:`.circuits`), each bounded in
duration and bytes.  On top of that, Tor-style accounting: one rate shared
by all circuits (:mod:`.shared_rate`) and an optional monthly allowance
(:mod:`.accounting`).  None of it touches the network or schedules timers:
time comes from an injected ``now`` (``Callable[[], float]``, e.g.
``reactor.seconds``), and the glue asks (``expire()``, ``delay()``) and acts.

Every refusal is a :class:`Refused` with a stable ``code`` and a human
``reason`` that names the ``[provider:relay]`` option at fault, so one log line
tells the operator what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from peerd.providers.relay.accounting import MonthlyUsage
from peerd.ratelimit import format_utc

MiB = 1024 * 1024

SECTION = "provider:relay"
"""The config section holding the options of :class:`RelayLimits`."""

# Refusal codes (for :class:`Refused`).
NO_RESERVATION = "no-reservation"
RESERVATION_LIMIT = "reservation-limit"
CIRCUIT_LIMIT = "circuit-limit"
PEER_CIRCUIT_LIMIT = "peer-circuit-limit"
MONTHLY_ALLOWANCE = "monthly-allowance"
NOT_SERVING = "not-serving"
SELF = "self"

# Stop codes (from :meth:`Circuit.record`); MONTHLY_ALLOWANCE is one too.
CIRCUIT_BYTES = "circuit-bytes"
CIRCUIT_TIME = "circuit-time"

LIMIT_KEYS = {
    RESERVATION_LIMIT: "max_reservations",
    CIRCUIT_LIMIT: "max_circuits",
    PEER_CIRCUIT_LIMIT: "max_circuits_per_peer",
    MONTHLY_ALLOWANCE: "monthly_bytes",
    CIRCUIT_BYTES: "circuit_max_bytes",
    CIRCUIT_TIME: "circuit_max_seconds",
}
"""The :class:`RelayLimits` option behind each refusal or stop code."""


def config_key(option: str) -> str:
    """How an option is named to the operator: ``[provider:relay] OPTION``."""
    return f"[{SECTION}] {option}"


@dataclass(frozen=True)
class RelayLimits:
    """
    What a relay lends, per ``[provider:relay]`` option of the same name.

    The defaults suit a home connection: a relay of last resort for a handful of
    friends' peers, not a public service.
    """

    max_reservations: int = 16
    """Peers that may hold a reservation at once (libp2p's default is 128)."""

    reservation_seconds: float = 3600
    """How long a reservation lasts before the peer must renew it (libp2p: 1 h)."""

    max_circuits: int = 16
    """Circuits open at once through this relay, in total."""

    max_circuits_per_peer: int = 4
    """Circuits open at once that one peer is an end of (as source or destination)."""

    circuit_max_seconds: float = 600
    """How long one circuit may stay open before it is cut (10 min)."""

    circuit_max_bytes: int = 256 * MiB
    """Bytes one circuit may carry, both directions together, before it is cut."""

    rate: float = 1 * MiB
    """Bytes per second across all circuits together; 0 means unlimited."""

    monthly_bytes: int = 0
    """Bytes relayed per calendar month (UTC) before the relay stops; 0 means no cap."""

    def __post_init__(self) -> None:
        for name in ("max_reservations", "max_circuits", "max_circuits_per_peer"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{config_key(name)} must be an integer >= 0, not {value!r}")
        for name in ("reservation_seconds", "circuit_max_seconds", "circuit_max_bytes"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{config_key(name)} must be positive, not {value!r}")
        if not isinstance(self.circuit_max_bytes, int):
            raise ValueError(f"{config_key('circuit_max_bytes')} must be an integer")
        if not self.rate >= 0 or self.rate == float("inf"):
            raise ValueError(f"{config_key('rate')} must be a number >= 0, not {self.rate!r}")
        if not isinstance(self.monthly_bytes, int) or self.monthly_bytes < 0:
            raise ValueError(f"{config_key('monthly_bytes')} must be an integer >= 0")


class Refused(Exception):
    """
    The relay will not do what was asked.

    :ivar code: a stable machine-readable code (``circuit-limit``, ...), fit for
        the wire.
    :ivar reason: a sentence for humans; names ``[provider:relay] OPTION`` when a
        configured limit is the cause.
    :ivar option: that option's name, or ``None`` when no option is at fault.
    """

    def __init__(self, code: str, reason: str, option: str | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.option = option

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def limit_refused(code: str, reason: str) -> Refused:
    """A :class:`Refused` for ``code`` whose reason names the option behind it."""
    option = LIMIT_KEYS[code]
    return Refused(code, f"{reason} ({config_key(option)})", option)


def monthly_refused(usage: MonthlyUsage) -> Refused:
    """The refusal of a circuit once the month's allowance is spent."""
    return limit_refused(
        MONTHLY_ALLOWANCE,
        f"the monthly relay allowance of {usage.limit} bytes is used up; "
        f"it resets at {format_utc(usage.resets_at())}",
    )


def describe_stop(code: str, limits: RelayLimits) -> str:
    """A log line's worth of why a circuit was cut with stop ``code``, naming the option."""
    if code == CIRCUIT_BYTES:
        text = f"the circuit carried its {limits.circuit_max_bytes} bytes"
    elif code == CIRCUIT_TIME:
        text = f"the circuit was open for its {limits.circuit_max_seconds:g} seconds"
    elif code == MONTHLY_ALLOWANCE:
        text = f"the monthly relay allowance of {limits.monthly_bytes} bytes is used up"
    else:
        return code
    return f"{text} ({config_key(LIMIT_KEYS[code])})"
