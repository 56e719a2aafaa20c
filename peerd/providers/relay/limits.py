"""
The relay's bookkeeping: what it has promised and what it may still give.

Modelled on libp2p circuit relay v2.  A peer that cannot be dialled
*reserves* a slot (:class:`ReservationTable`); other peers then open
*circuits* to it through the relay (:class:`CircuitTable`), each bounded in
duration and bytes (:class:`Circuit`).  On top of that, Tor-style accounting:
one rate shared by all circuits (:class:`RelayRate`) and an optional monthly
allowance (:class:`~peerd.providers.relay.accounting.MonthlyUsage`).

Nothing here touches the network or schedules timers: time comes from an
injected ``now`` (``Callable[[], float]``, e.g. ``reactor.seconds``), and the
glue asks (``expire()``, ``delay()``) and acts.

Every refusal is a :class:`Refused` with a stable ``code`` and a human
``reason`` that names the ``[provider:relay]`` option at fault, so one log line
tells the operator what to change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from peerd.providers.relay.accounting import MonthlyUsage
from peerd.ratelimit import Meter, TokenBucket, format_utc

MiB = 1024 * 1024

SECTION = "provider:relay"
"""The config section holding the options of :class:`RelayLimits`."""

RATE_WINDOW = 10.0
"""Seconds over which a circuit's rates are measured."""

FORWARD = "forward"
"""Bytes from a circuit's ``src`` to its ``dst``."""

BACKWARD = "backward"
"""Bytes from a circuit's ``dst`` back to its ``src``."""

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


def _limit_refused(code: str, reason: str) -> Refused:
    option = LIMIT_KEYS[code]
    return Refused(code, f"{reason} ({config_key(option)})", option)


def _monthly_refused(usage: MonthlyUsage) -> Refused:
    return _limit_refused(
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
            raise _limit_refused(
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


class Circuit:
    """
    One relayed connection from ``src`` to ``dst`` and what it has carried.

    A circuit is open until :meth:`CircuitTable.close` sets :attr:`closed` to
    the reason.  The glue forwards bytes like this::

        n = circuit.allowance(len(data))
        forward(data[:n])
        stop = circuit.record(direction, n)
        if stop is not None or n < len(data):
            table.close(circuit, stop or CIRCUIT_BYTES)

    so exactly ``circuit_max_bytes`` pass before the circuit is cut.
    """

    def __init__(
        self,
        id: int,
        src: Hashable,
        dst: Hashable,
        limits: RelayLimits,
        usage: MonthlyUsage,
        now: Callable[[], float],
    ) -> None:
        self.id = id
        self.src = src
        self.dst = dst
        self._limits = limits
        self._usage = usage
        self._now = now
        self.opened_at = now()
        self.bytes_forward = 0
        self.bytes_backward = 0
        self.closed: str | None = None
        """Why the circuit was closed, or ``None`` while it is open."""
        self._meters = {FORWARD: Meter(RATE_WINDOW, now), BACKWARD: Meter(RATE_WINDOW, now)}

    @property
    def bytes_total(self) -> int:
        """Bytes carried in both directions."""
        return self.bytes_forward + self.bytes_backward

    @property
    def deadline(self) -> float:
        """When the circuit's time is up (for the glue's timer)."""
        return self.opened_at + self._limits.circuit_max_seconds

    def age(self) -> float:
        """Seconds since the circuit opened."""
        return self._now() - self.opened_at

    def expired(self) -> bool:
        """Whether the circuit has been open for ``circuit_max_seconds`` or more."""
        return self.age() >= self._limits.circuit_max_seconds

    def rate(self, direction: str) -> float:
        """Bytes/s carried in ``direction`` over the last 10 seconds."""
        return self._meters[_check_direction(direction)].rate()

    def allowance(self, n: int) -> int:
        """
        How many of the next ``n`` bytes may still pass: ``n`` unless the
        circuit's byte limit or the monthly allowance would be overrun; 0 once
        the circuit is closed or its time is up.
        """
        if self.closed is not None or self.expired():
            return 0
        left = max(0, self._limits.circuit_max_bytes - self.bytes_total)
        remaining = self._usage.remaining()
        if remaining is not None:
            left = min(left, remaining)
        return max(0, min(n, left))

    def record(self, direction: str, n: int) -> str | None:
        """
        Count ``n`` bytes forwarded in ``direction``, and return a stop code if
        the circuit must now be cut, else ``None``:

        - ``circuit-bytes``: it has carried ``circuit_max_bytes`` (nothing more
          may pass);
        - ``monthly-allowance``: the month's allowance is spent;
        - ``circuit-time``: it has been open ``circuit_max_seconds``;
        - the close reason, if it was already closed.
        """
        _check_direction(direction)
        if n < 0:
            raise ValueError(f"cannot record a negative number of bytes: {n!r}")
        if direction == FORWARD:
            self.bytes_forward += n
        else:
            self.bytes_backward += n
        self._meters[direction].add(n)
        self._usage.add(n)
        return self.stop_code()

    def stop_code(self) -> str | None:
        """Why the circuit must be cut now (see :meth:`record`), or ``None``."""
        if self.closed is not None:
            return self.closed
        if self.bytes_total >= self._limits.circuit_max_bytes:
            return CIRCUIT_BYTES
        if self._usage.exhausted():
            return MONTHLY_ALLOWANCE
        if self.expired():
            return CIRCUIT_TIME
        return None

    def snapshot(self) -> dict:
        """The circuit's state for status displays."""
        age = self.age()
        return {
            "id": self.id,
            "src": str(self.src),
            "dst": str(self.dst),
            "age": age,
            "bytes_forward": self.bytes_forward,
            "bytes_backward": self.bytes_backward,
            "rate_forward": self.rate(FORWARD),
            "rate_backward": self.rate(BACKWARD),
            "limits": {
                "max_seconds": self._limits.circuit_max_seconds,
                "max_bytes": self._limits.circuit_max_bytes,
                "remaining_seconds": max(0.0, self._limits.circuit_max_seconds - age),
                "remaining_bytes": max(0, self._limits.circuit_max_bytes - self.bytes_total),
            },
        }

    def __repr__(self) -> str:
        return f"<Circuit {self.id} {self.src} -> {self.dst}>"


def _check_direction(direction: str) -> str:
    if direction not in (FORWARD, BACKWARD):
        raise ValueError(f"direction must be {FORWARD!r} or {BACKWARD!r}, not {direction!r}")
    return direction


class CircuitTable:
    """
    The open circuits, and the checks a new one must pass.

    ``usage`` is charged by every :meth:`Circuit.record`; pass
    ``MonthlyUsage(None, 0, time.time)`` for no monthly cap.
    """

    def __init__(
        self,
        limits: RelayLimits,
        reservations: ReservationTable,
        usage: MonthlyUsage,
        now: Callable[[], float],
    ) -> None:
        self._limits = limits
        self._reservations = reservations
        self._usage = usage
        self._now = now
        self._circuits: dict[int, Circuit] = {}
        self._per_peer: Counter[Hashable] = Counter()
        self._next_id = 1
        self._serving = True

    @property
    def serving(self) -> bool:
        """False after :meth:`stop`."""
        return self._serving

    def open(self, src: Hashable, dst: Hashable) -> Circuit:
        """
        Open a circuit from ``src`` to ``dst``.

        :raises Refused: in the order checked: ``not-serving``; ``self`` (``src``
            is ``dst``); ``no-reservation`` (``dst`` holds no live reservation);
            ``monthly-allowance``; ``circuit-limit``; ``peer-circuit-limit``
            (``src`` or ``dst`` is already an end of ``max_circuits_per_peer``
            circuits).
        """
        limits = self._limits
        if not self._serving:
            raise Refused(NOT_SERVING, "this relay is not serving")
        if src == dst:
            raise Refused(SELF, f"{src} asked for a circuit to itself")
        if not self._reservations.has(dst):
            raise Refused(NO_RESERVATION, f"{dst} has no reservation on this relay")
        if self._usage.exhausted():
            raise _monthly_refused(self._usage)
        if len(self._circuits) >= limits.max_circuits:
            raise _limit_refused(CIRCUIT_LIMIT, f"all {limits.max_circuits} circuits are in use")
        for peer in (src, dst):
            if self._per_peer[peer] >= limits.max_circuits_per_peer:
                raise _limit_refused(
                    PEER_CIRCUIT_LIMIT,
                    f"{peer} is already an end of {self._per_peer[peer]} circuits",
                )
        circuit = Circuit(self._next_id, src, dst, limits, self._usage, self._now)
        self._next_id += 1
        self._circuits[circuit.id] = circuit
        self._per_peer[src] += 1
        self._per_peer[dst] += 1
        return circuit

    def close(self, circuit: Circuit, reason: str) -> None:
        """Forget ``circuit``, recording ``reason`` on it; closing twice does nothing."""
        if self._circuits.pop(circuit.id, None) is None:
            return
        circuit.closed = reason
        for peer in (circuit.src, circuit.dst):
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]

    def get(self, id: int) -> Circuit | None:
        """The open circuit with ``id``, if any."""
        return self._circuits.get(id)

    def active(self) -> list[Circuit]:
        """The open circuits, oldest first."""
        return list(self._circuits.values())

    def count(self, peer: Hashable) -> int:
        """How many open circuits ``peer`` is an end of."""
        return self._per_peer[peer]

    def expire(self) -> list[Circuit]:
        """Close (``circuit-time``) and return the circuits whose time is up."""
        gone = [c for c in self._circuits.values() if c.expired()]
        for circuit in gone:
            self.close(circuit, CIRCUIT_TIME)
        return gone

    def stop(self) -> list[Circuit]:
        """Close every circuit (``not-serving``), refuse new ones; return the closed."""
        self._serving = False
        gone = self.active()
        for circuit in gone:
            self.close(circuit, NOT_SERVING)
        return gone

    def __len__(self) -> int:
        """How many circuits are open."""
        return len(self._circuits)

    def snapshot(self) -> list[dict]:
        """Each open circuit's :meth:`Circuit.snapshot`, oldest first."""
        return [circuit.snapshot() for circuit in self._circuits.values()]


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
