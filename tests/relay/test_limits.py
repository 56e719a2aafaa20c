"""Tests for the relay's bookkeeping: peerd.providers.relay's limits, reservations, circuits, shared_rate and accounting."""

from __future__ import annotations

import bisect
import calendar
import json

import pytest
from twisted.logger import capturedLogs, formatEvent

from peerd.providers.relay.accounting import MonthlyUsage
from peerd.providers.relay.circuits import BACKWARD, FORWARD, CircuitTable
from peerd.providers.relay.limits import (
    CIRCUIT_BYTES,
    CIRCUIT_TIME,
    MiB,
    Refused,
    RelayLimits,
    describe_stop,
)
from peerd.providers.relay.reservations import ReservationTable
from peerd.providers.relay.shared_rate import RelayRate

# 2026-11-30T23:59:59Z, one second before December.
END_OF_NOVEMBER = float(calendar.timegm((2026, 11, 30, 23, 59, 59)))
DECEMBER = float(calendar.timegm((2026, 12, 1, 0, 0, 0)))


class FakeTime:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_relay(now, usage=None, **limits):
    """A reservation table and circuit table sharing ``now`` and ``limits``."""
    relay_limits = RelayLimits(**limits)
    reservations = ReservationTable(relay_limits, now)
    if usage is None:
        usage = MonthlyUsage(None, relay_limits.monthly_bytes, lambda: END_OF_NOVEMBER - 86400)
    return reservations, CircuitTable(relay_limits, reservations, usage, now)


def refusal(call, *args) -> Refused:
    with pytest.raises(Refused) as info:
        call(*args)
    return info.value


# -- limits --------------------------------------------------------------------


def test_default_limits_are_home_sized():
    """The defaults are the documented, home-connection-safe values."""
    limits = RelayLimits()
    assert (limits.max_reservations, limits.reservation_seconds) == (16, 3600)
    assert (limits.max_circuits, limits.max_circuits_per_peer) == (16, 4)
    assert (limits.circuit_max_seconds, limits.circuit_max_bytes) == (600, 256 * MiB)
    assert (limits.rate, limits.monthly_bytes) == (1 * MiB, 0)


def test_invalid_limits_name_the_option():
    """A nonsensical limit is rejected with its config key."""
    with pytest.raises(ValueError, match=r"\[provider:relay\] max_circuits"):
        RelayLimits(max_circuits=-1)
    with pytest.raises(ValueError, match=r"\[provider:relay\] circuit_max_seconds"):
        RelayLimits(circuit_max_seconds=0)
    with pytest.raises(ValueError, match=r"\[provider:relay\] rate"):
        RelayLimits(rate=-5)


# -- reservations --------------------------------------------------------------


def test_reservation_is_one_per_peer_and_renewal_extends():
    """Reserving again renews the one reservation, moving its expiry later."""
    now = FakeTime()
    table = ReservationTable(RelayLimits(reservation_seconds=100), now)
    assert table.reserve("a") == 1100
    now.advance(60)
    assert table.reserve("a") == 1160
    assert len(table) == 1
    now.advance(90)  # past the first expiry, before the renewed one
    assert table.has("a")
    assert table.expires_at("a") == 1160


def test_full_reservation_table_refuses_with_code_and_key():
    """A new peer is refused reservation-limit naming max_reservations; holders may still renew."""
    now = FakeTime()
    table = ReservationTable(RelayLimits(max_reservations=2), now)
    table.reserve("a")
    table.reserve("b")
    error = refusal(table.reserve, "c")
    assert error.code == "reservation-limit"
    assert error.option == "max_reservations"
    assert "[provider:relay] max_reservations" in error.reason
    table.reserve("a")  # renewal needs no new slot
    table.drop("b")
    table.reserve("c")
    assert not table.has("b") and table.has("c")


def test_reservations_expire():
    """A reservation is dead at its expiry; expire() removes and returns it, freeing the slot."""
    now = FakeTime()
    table = ReservationTable(RelayLimits(max_reservations=1, reservation_seconds=100), now)
    table.reserve("a")
    now.advance(99.5)
    assert table.has("a")
    assert table.expire() == []
    now.advance(0.5)
    assert not table.has("a")
    assert table.snapshot() == []
    assert table.expire() == ["a"]
    assert table.expire() == []
    table.reserve("b")


def test_reservation_snapshot():
    """snapshot() lists live reservations, soonest first, with seconds left."""
    now = FakeTime()
    table = ReservationTable(RelayLimits(reservation_seconds=100), now)
    table.reserve("b")
    now.advance(10)
    table.reserve("a")
    now.advance(5)
    assert table.snapshot() == [
        {"peer": "b", "expires_in": 85},
        {"peer": "a", "expires_in": 95},
    ]


def test_stopped_relay_refuses_reservations_and_circuits():
    """After stop(), reservations and circuits are refused not-serving; open ones are closed."""
    now = FakeTime()
    reservations, circuits = make_relay(now)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    assert circuits.stop() == [circuit]
    assert circuit.closed == "not-serving"
    assert reservations.stop() == ["b"]
    assert refusal(reservations.reserve, "b").code == "not-serving"
    assert refusal(circuits.open, "a", "b").code == "not-serving"


# -- circuit refusals ----------------------------------------------------------


def test_circuit_needs_a_live_reservation_at_dst():
    """A circuit to a peer without a live reservation is refused no-reservation."""
    now = FakeTime()
    reservations, circuits = make_relay(now, reservation_seconds=100)
    assert refusal(circuits.open, "a", "b").code == "no-reservation"
    reservations.reserve("b")
    circuits.open("a", "b")
    now.advance(100)
    assert refusal(circuits.open, "a", "b").code == "no-reservation"


def test_circuit_to_self_is_refused():
    """A peer may not open a circuit to itself."""
    reservations, circuits = make_relay(FakeTime())
    reservations.reserve("a")
    assert refusal(circuits.open, "a", "a").code == "self"


def test_circuit_limit():
    """Past max_circuits in total, a circuit is refused circuit-limit naming the key."""
    reservations, circuits = make_relay(FakeTime(), max_circuits=2)
    reservations.reserve("d")
    first = circuits.open("a", "d")
    circuits.open("b", "d")
    error = refusal(circuits.open, "c", "d")
    assert (error.code, error.option) == ("circuit-limit", "max_circuits")
    assert "[provider:relay] max_circuits" in error.reason
    circuits.close(first, "done")
    circuits.open("c", "d")


def test_peer_circuit_limit_counts_both_directions():
    """A peer's circuits count whether it is the source or the destination."""
    reservations, circuits = make_relay(FakeTime(), max_circuits_per_peer=2)
    reservations.reserve("a")
    reservations.reserve("b")
    circuits.open("a", "b")  # a as source
    circuits.open("c", "a")  # a as destination
    assert circuits.count("a") == 2
    error = refusal(circuits.open, "a", "b")
    assert error.code == "peer-circuit-limit"
    assert "[provider:relay] max_circuits_per_peer" in error.reason
    assert "a is already an end of 2 circuits" in error.reason
    error = refusal(circuits.open, "d", "a")
    assert error.code == "peer-circuit-limit"
    circuits.open("d", "b")  # b has one; still allowed


def test_closing_frees_peer_slots_and_is_idempotent():
    """close() releases the circuit's per-peer slots once, however often it is called."""
    reservations, circuits = make_relay(FakeTime(), max_circuits_per_peer=1)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    circuits.close(circuit, "eof")
    circuits.close(circuit, "again")
    assert circuit.closed == "eof"
    assert circuits.count("a") == circuits.count("b") == 0
    assert circuits.active() == []
    circuits.open("a", "b")


# -- circuit limits ------------------------------------------------------------


def test_allowance_passes_exactly_circuit_max_bytes_then_circuit_bytes():
    """Forwarding by allowance() moves exactly circuit_max_bytes, then record() says circuit-bytes."""
    reservations, circuits = make_relay(FakeTime(), circuit_max_bytes=1000)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    forwarded = 0
    stops = []
    for i in range(20):
        direction = FORWARD if i % 2 else BACKWARD
        n = circuit.allowance(64)
        forwarded += n
        stop = circuit.record(direction, n)
        stops.append(stop)
        if stop is not None or n < 64:
            circuits.close(circuit, stop or CIRCUIT_BYTES)
            break
    assert forwarded == 1000
    assert circuit.bytes_forward + circuit.bytes_backward == 1000
    assert stops[-1] == "circuit-bytes"
    assert stops[:-1] == [None] * (len(stops) - 1)
    assert circuit.closed == "circuit-bytes"
    assert circuit.allowance(1) == 0
    assert "[provider:relay] circuit_max_bytes" in describe_stop(CIRCUIT_BYTES, RelayLimits())


def test_recording_past_the_limit_stops_the_circuit():
    """A glue that records more than allowed still gets circuit-bytes."""
    reservations, circuits = make_relay(FakeTime(), circuit_max_bytes=1000)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    assert circuit.record(FORWARD, 999) is None
    assert circuit.record(BACKWARD, 5) == "circuit-bytes"


def test_circuit_time_limit():
    """A circuit expires at circuit_max_seconds; expire() closes it with circuit-time."""
    now = FakeTime()
    reservations, circuits = make_relay(now, circuit_max_seconds=600, reservation_seconds=60)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    assert circuit.deadline == now() + 600
    now.advance(599)
    assert not circuit.expired()
    assert circuit.record(FORWARD, 10) is None
    assert circuits.expire() == []
    now.advance(1)
    assert circuit.expired()
    assert circuit.allowance(10) == 0
    assert circuit.record(FORWARD, 0) == "circuit-time"
    assert circuits.expire() == [circuit]
    assert circuit.closed == CIRCUIT_TIME
    assert circuits.active() == []
    assert "[provider:relay] circuit_max_seconds" in describe_stop(CIRCUIT_TIME, RelayLimits())


def test_circuit_snapshot_fields():
    """A circuit's snapshot has id, ends, age, bytes and 10 s rates each way, and its limits."""
    now = FakeTime()
    reservations, circuits = make_relay(now, circuit_max_seconds=600, circuit_max_bytes=10_000)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    for _ in range(20):
        now.advance(1)
        circuit.record(FORWARD, 100)
        circuit.record(BACKWARD, 50)
    now.advance(0.5)
    [snap] = circuits.snapshot()
    assert snap == {
        "id": circuit.id,
        "src": "a",
        "dst": "b",
        "age": 20.5,
        "bytes_forward": 2000,
        "bytes_backward": 1000,
        "rate_forward": pytest.approx(100, rel=0.1),
        "rate_backward": pytest.approx(50, rel=0.1),
        "limits": {
            "max_seconds": 600,
            "max_bytes": 10_000,
            "remaining_seconds": 579.5,
            "remaining_bytes": 7000,
        },
    }
    with pytest.raises(ValueError):
        circuit.record("sideways", 1)


# -- shared rate ---------------------------------------------------------------


def test_relay_rate_holds_within_ten_percent_over_ten_second_windows():
    """Greedy forwarders on three circuits share the rate within 10% in every 10 s window."""
    now = FakeTime(0.0)
    rate = RelayRate(RelayLimits(rate=1 * MiB), now)
    chunk = 16 * 1024
    events: list[tuple[float, int]] = []
    while now() < 60:
        for _ in range(3):  # three circuits take turns
            wait = rate.delay(chunk)
            if wait > 0:
                now.advance(wait)
            rate.consume(chunk)
            events.append((now(), chunk))
    times = [t for t, _ in events]
    start = 0.0
    windows = 0
    while start + 10 <= 60:
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_left(times, start + 10)
        assert sum(n for _, n in events[lo:hi]) / 10 == pytest.approx(1 * MiB, rel=0.1)
        start += 0.5
        windows += 1
    assert windows == 101


def test_relay_rate_zero_is_unlimited():
    """With rate 0 nothing ever waits."""
    rate = RelayRate(RelayLimits(rate=0), FakeTime())
    rate.consume(10**12)
    assert rate.delay(10**9) == 0


# -- monthly usage -------------------------------------------------------------


def test_monthly_usage_persists_across_instances(tmp_path):
    """Bytes counted by one instance are there for the next, once flushed or saved."""
    path = tmp_path / "relay-usage.json"
    wall = FakeTime(END_OF_NOVEMBER - 3600)
    usage = MonthlyUsage(path, 10_000, wall, save_every=60)
    usage.add(100)
    assert not path.exists()  # not yet: at most one save per save_every
    wall.advance(60)
    usage.add(50)
    assert MonthlyUsage(path, 10_000, wall).used == 150
    usage.add(25)
    usage.flush()
    again = MonthlyUsage(path, 10_000, wall)
    assert again.used == 175
    assert again.remaining() == 10_000 - 175
    assert json.loads(path.read_text())["month"] == "2026-11"


def test_monthly_usage_resets_at_month_boundary(tmp_path):
    """At 2026-12-01T00:00:00Z the count restarts, in memory and for a reloaded file."""
    path = tmp_path / "relay-usage.json"
    wall = FakeTime(END_OF_NOVEMBER)
    usage = MonthlyUsage(path, 1000, wall)
    usage.add(1000)
    usage.flush()
    assert usage.exhausted()
    assert usage.resets_at() == DECEMBER
    wall.advance(1)
    assert MonthlyUsage(path, 1000, wall).used == 0
    assert not usage.exhausted()
    assert usage.remaining() == 1000
    assert usage.snapshot()["month"] == "2026-12"
    assert usage.resets_at() == float(calendar.timegm((2027, 1, 1, 0, 0, 0)))


def test_exhausted_allowance_refuses_circuits_and_cuts_open_ones():
    """Once the month's bytes are spent, new circuits get monthly-allowance naming the reset time."""
    wall = FakeTime(END_OF_NOVEMBER - 10)
    usage = MonthlyUsage(None, 1000, wall)
    reservations, circuits = make_relay(FakeTime(), usage=usage, monthly_bytes=1000)
    reservations.reserve("b")
    circuit = circuits.open("a", "b")
    assert circuit.allowance(5000) == 1000
    assert circuit.record(FORWARD, 1000) == "monthly-allowance"
    error = refusal(circuits.open, "c", "b")
    assert error.code == "monthly-allowance"
    assert "[provider:relay] monthly_bytes" in error.reason
    assert "resets at 2026-12-01T00:00:00Z" in error.reason
    wall.t = DECEMBER
    circuits.open("c", "b")


def test_no_monthly_allowance_is_unlimited():
    """With limit 0 usage is counted but never exhausted."""
    usage = MonthlyUsage(None, 0, FakeTime(END_OF_NOVEMBER))
    usage.add(10**15)
    assert not usage.exhausted()
    assert usage.remaining() is None
    assert usage.snapshot()["bytes"] == 10**15


@pytest.mark.parametrize(
    "content",
    [b"\x00\xffgarbage", b"[]", b'{"version": 1, "month": "2026-13", "bytes": 5}', b""],
)
def test_damaged_usage_file_starts_from_zero_and_logs(tmp_path, content):
    """A damaged usage file is logged and counting starts from 0; the next flush repairs it."""
    path = tmp_path / "relay-usage.json"
    path.write_bytes(content)
    wall = FakeTime(END_OF_NOVEMBER)
    with capturedLogs() as events:
        usage = MonthlyUsage(path, 1000, wall)
    assert usage.used == 0
    assert any("damaged relay usage file" in formatEvent(e) for e in events)
    usage.flush()
    assert MonthlyUsage(path, 1000, wall).used == 0
