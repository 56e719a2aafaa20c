"""
Tests for ``peerctl relay`` (``peerd.providers.relay.cli``) and the relayed rows of
``peerctl peers``, against the canned stdlib HTTP server of ``test_cli`` on a
unix socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import FakeDaemon

from peerd.peerctl.client import EXIT_API_ERROR
from peerd.peerctl.main import COMMANDS, main
from peerd.peerctl.output import format_peers
from peerd.providers.relay.cli import RelayCommand, format_relay

ROUTE = "/api/v1/providers/relay/status"
MiB = 1024 * 1024
RELAY = "AEAQCA-IBAEAQ-CAIBAE-AQCAIB-AEAQCA-IB4BWQ"
PEER_B = "AIBAEA-QCAIBA-EAQCAI-BAEAQC-AIBAEA-QCDSMQ"
PEER_C = "AMBQGA-YDAMBQ-GAYDAM-BQGAYD-AMBQGA-YDNQYA"

LIMITS = {
    "max_reservations": 16,
    "max_circuits": 16,
    "max_circuits_per_peer": 4,
    "circuit_max_seconds": 600.0,
    "circuit_max_bytes": 256 * MiB,
    "rate": 1 * MiB,
    "monthly_bytes": 0,
}


def circuit(**fields: object) -> dict:
    """An open circuit as the relay reports it."""
    value = {
        "id": 7,
        "src": PEER_C,
        "dst": PEER_B,
        "age": 75.0,
        "bytes_forward": 4096,
        "bytes_backward": 3 * MiB,
        "rate_forward": 512.0,
        "rate_backward": 1 * MiB,
        "limits": {
            "max_seconds": 600.0,
            "max_bytes": 256 * MiB,
            "remaining_seconds": 525.0,
            "remaining_bytes": 253 * MiB - 4096,
        },
    }
    value.update(fields)
    return value


def monthly(**fields: object) -> dict:
    value = {
        "month": "2026-05",
        "bytes": 3 * MiB + 4096,
        "limit": None,
        "remaining": None,
        "exhausted": False,
        "resets_at": 1780272000.0,
        "resets_in": 3 * 86400 + 4 * 3600.0,
    }
    value.update(fields)
    return value


def relay_status(**fields: object) -> dict:
    """A relay's status: serving, one reservation, one circuit, no reservations of its own."""
    value = {
        "serving": True,
        "reserving": False,
        "limits": dict(LIMITS),
        "reservations": [{"peer": PEER_B, "expires_in": 3540.0}],
        "circuits": [circuit()],
        "monthly": monthly(),
        "relayed_via": [],
    }
    value.update(fields)
    return value


def relayed_status() -> dict:
    """A ``listen = none`` peer: not serving, reserved on one relay, asking another."""
    return relay_status(
        serving=False,
        reserving=True,
        reservations=[],
        circuits=[],
        relayed_via=[
            {
                "relay": RELAY,
                "expires_in": 1790.0,
                "addresses": [f"{PEER_B}@{RELAY}@10.0.0.1:7845"],
            },
            {"relay": PEER_C, "expires_in": None, "addresses": []},
        ],
    )


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(data_dir / "control.sock")
    yield fake
    fake.close()


def run(data_dir: Path, *argv: str) -> int:
    return main(["--data-dir", str(data_dir), *argv], commands=[RelayCommand()])


def section(text: str, title: str) -> list[str]:
    """The indented lines under the line starting with ``title``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        body.append(line)
    return body


# -- peerctl relay ----------------------------------------------------------------------


def test_command_registered() -> None:
    """``peerd.peerctl.main.COMMANDS`` includes ``relay`` once, so ``peerctl`` offers it."""
    assert [c.name for c in COMMANDS].count("relay") == 1


def test_relay_serving(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """
    On a relay: serving, each limit, the month's usage, the reservations
    (peer, expires in) and each circuit's id, ends, age, bytes and rates each
    way and what is left; one GET of the status route.
    """
    daemon.routes[("GET", ROUTE)] = (200, relay_status())
    assert run(data_dir, "relay") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["serving:", "yes"]
    assert "16 reservations, 16 circuits (4 per peer)" in lines[1]
    assert "each circuit: 10m00s, 256.0 MiB" in out
    assert "rate: 1.0 MiB/s across all circuits" in out
    assert "monthly: no allowance" in out
    assert "this month:     2026-05: 3.0 MiB relayed" in out
    header, row = section(out, "reservations (1):")
    assert header.split() == ["PEER", "EXPIRES", "IN"]
    assert row.split() == [PEER_B, "59m00s"]
    header, row = section(out, "circuits (1):")
    assert header.split() == [
        "ID", "SOURCE", "DESTINATION", "AGE", "BYTES", "->/<-", "RATE", "->/<-", "LEFT"
    ]  # fmt: skip
    assert row.split() == [
        "7", PEER_C, PEER_B, "1m15s", "4.0", "KiB", "/", "3.0", "MiB",
        "512", "B/s", "/", "1.0", "MiB/s", "253.0", "MiB,", "8m45s",
    ]  # fmt: skip
    assert row.index(PEER_B) == header.index("DESTINATION")
    assert lines[-1].split() == ["reserving:", "no"]
    assert daemon.requests == [("GET", ROUTE, b"")]


def test_relay_monthly_allowance(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """With ``monthly_bytes`` set: usage of the allowance, used up, and when it resets."""
    limits = dict(LIMITS, monthly_bytes=50 * 1024 * MiB, rate=0)
    used = monthly(bytes=50 * 1024 * MiB, limit=50 * 1024 * MiB, remaining=0, exhausted=True)
    daemon.routes[("GET", ROUTE)] = (200, relay_status(limits=limits, monthly=used, circuits=[]))
    assert run(data_dir, "relay") == 0
    out = capsys.readouterr().out
    assert "rate: unlimited across all circuits" in out
    assert "monthly: 50.0 GiB" in out
    assert "2026-05: 50.0 GiB relayed of 50.0 GiB, used up (resets in 3d04h)" in out
    assert section(out, "circuits (0):") == ["  none"]


def test_relayed_peer(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """
    On a peer reached through relays: not serving (no relay tables), and its
    reservations: relay, expires in (``pending`` until granted), addresses.
    """
    daemon.routes[("GET", ROUTE)] = (200, relayed_status())
    assert run(data_dir, "relay") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        "serving:        no",
        "reserving:      yes",
        "reserved on relays (2):",
    ]
    assert "circuits" not in out
    assert section(out, "reserved on relays (2):") == [
        f"  {RELAY}  expires in 29m50s",
        f"    {PEER_B}@{RELAY}@10.0.0.1:7845",
        f"  {PEER_C}  pending",
    ]


def test_relayed_peer_without_relays() -> None:
    """A peer that wants relays but has none yet says ``none``."""
    text = format_relay(relay_status(serving=False, reserving=True, relayed_via=[]))
    assert text.splitlines()[-2:] == ["reserved on relays (0):", "  none"]


def test_relay_idle() -> None:
    """A relay with no reservations and no circuits says ``none`` for each."""
    text = format_relay(relay_status(reservations=[], circuits=[]))
    assert section(text, "reservations (0):") == ["  none"]
    assert section(text, "circuits (0):") == ["  none"]


def test_relay_json(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``relay --json`` prints the API's answer as is."""
    answer = relay_status()
    daemon.routes[("GET", ROUTE)] = (200, answer)
    assert run(data_dir, "relay", "--json") == 0
    assert json.loads(capsys.readouterr().out) == answer


def test_relay_not_installed(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """Without the relay provider the daemon's 404 message comes through on one line."""
    assert run(data_dir, "relay") == EXIT_API_ERROR
    assert capsys.readouterr().err == f"peerctl: no such API route: {ROUTE}\n"


# -- peerctl peers -----------------------------------------------------------------------


def test_peers_relayed_row() -> None:
    """A session through a relay shows ``via relay RELAYID`` in the ADDRESS column."""
    direct = {
        "peer_id": RELAY,
        "address": "10.0.0.1:7845",
        "direction": "outbound",
        "providers": {"relay": "1"},
        "since": 900.0,
        "relay": None,
    }
    relayed = dict(direct, peer_id=PEER_B, address=f"relay {RELAY}", relay=RELAY)
    header, first, second = format_peers([direct, relayed], now=1000.0).splitlines()
    assert first.split()[:2] == [RELAY, "10.0.0.1:7845"]
    assert second.split()[:4] == [PEER_B, "via", "relay", RELAY]
    assert second.index("via") == header.index("ADDRESS")
