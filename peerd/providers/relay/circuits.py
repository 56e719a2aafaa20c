"""
Circuits: the relayed connections open through this relay, what each has
carried, and the checks a new one must pass (libp2p circuit relay v2's
CONNECT, bounded in time and bytes, charged to the monthly allowance).
Pure: time comes from an injected ``now``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

from peerd.providers.relay.accounting import MonthlyUsage
from peerd.providers.relay.limits import (
    CIRCUIT_BYTES,
    CIRCUIT_LIMIT,
    CIRCUIT_TIME,
    MONTHLY_ALLOWANCE,
    NO_RESERVATION,
    NOT_SERVING,
    PEER_CIRCUIT_LIMIT,
    SELF,
    Refused,
    RelayLimits,
    limit_refused,
    monthly_refused,
)
from peerd.providers.relay.reservations import ReservationTable
from peerd.ratelimit import Meter

RATE_WINDOW = 10.0
"""Seconds over which a circuit's rates are measured."""

FORWARD = "forward"
"""Bytes from a circuit's ``src`` to its ``dst``."""

BACKWARD = "backward"
"""Bytes from a circuit's ``dst`` back to its ``src``."""


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
            raise monthly_refused(self._usage)
        if len(self._circuits) >= limits.max_circuits:
            raise limit_refused(CIRCUIT_LIMIT, f"all {limits.max_circuits} circuits are in use")
        for peer in (src, dst):
            if self._per_peer[peer] >= limits.max_circuits_per_peer:
                raise limit_refused(
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
