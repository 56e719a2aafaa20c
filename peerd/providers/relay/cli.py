"""
``peerctl relay``: what the relay provider lends and what it holds.

For a relay: whether it serves, its limits, the reservations it granted,
the circuits open through it (with bytes and rates each way and what is
left of each circuit's limits) and the month's usage.  For a peer reached
through relays: its reservations (relay, time left, relayed addresses).

It calls ``GET /api/v1/providers/relay/status`` (see ``docs/api.rst``); with
``--json`` it prints that answer.  Standard library only, like the rest of
``peerctl``.  ``peerd.peerctl.main`` joins :data:`COMMANDS` with the others.
"""

from __future__ import annotations

import argparse

from peerd.peerctl.client import EXIT_OK, ControlClient
from peerd.peerctl.command import Command
from peerd.peerctl.output import format_bytes, format_duration, format_table, show

STATUS_ROUTE = "providers/relay/status"


# -- formatting -----------------------------------------------------------------------


def format_rate(rate: float | None) -> str:
    """``1.0 MiB/s``; ``unlimited`` for 0."""
    return f"{format_bytes(rate)}/s" if rate else "unlimited"


def format_limits(limits: dict) -> list[str]:
    """The configured limits, one short line each."""
    monthly = limits.get("monthly_bytes") or 0
    return [
        f"{limits['max_reservations']} reservations, {limits['max_circuits']} circuits "
        f"({limits['max_circuits_per_peer']} per peer)",
        f"each circuit: {format_duration(limits['circuit_max_seconds'])}, "
        f"{format_bytes(limits['circuit_max_bytes'])}",
        f"rate: {format_rate(limits.get('rate'))} across all circuits",
        f"monthly: {format_bytes(monthly) if monthly else 'no allowance'}",
    ]


def format_monthly(monthly: dict) -> str:
    """``2026-05: 12.0 MiB relayed of 50.0 GiB (resets in 3d04h)``."""
    text = f"{monthly['month']}: {format_bytes(monthly['bytes'])} relayed"
    if monthly.get("limit"):
        text += f" of {format_bytes(monthly['limit'])}"
        if monthly.get("exhausted"):
            text += ", used up"
        text += f" (resets in {format_duration(monthly.get('resets_in') or 0)})"
    return text


def format_reservations(reservations: list) -> str:
    """The reservations this relay granted."""
    if not reservations:
        return "  none"
    rows = [("PEER", "EXPIRES IN")]
    rows += [(r["peer"], format_duration(r["expires_in"])) for r in reservations]
    return format_table(rows, indent="  ")


def format_circuits(circuits: list) -> str:
    """The open circuits: ends, age, bytes and rates each way, what is left."""
    if not circuits:
        return "  none"
    rows = [("ID", "SOURCE", "DESTINATION", "AGE", "BYTES ->/<-", "RATE ->/<-", "LEFT")]
    for c in circuits:
        left = c.get("limits", {})
        rows.append(
            (
                str(c["id"]),
                c["src"],
                c["dst"],
                format_duration(c["age"]),
                f"{format_bytes(c['bytes_forward'])} / {format_bytes(c['bytes_backward'])}",
                f"{format_rate_each(c['rate_forward'])} / {format_rate_each(c['rate_backward'])}",
                f"{format_bytes(left.get('remaining_bytes', 0))}, "
                f"{format_duration(left.get('remaining_seconds', 0))}",
            )
        )
    return format_table(rows, indent="  ")


def format_rate_each(rate: float) -> str:
    """A measured rate: ``0 B/s`` when idle."""
    return f"{format_bytes(rate or 0)}/s"


def format_relayed_via(relayed_via: list) -> str:
    """This peer's own reservations on relays; ``pending`` until granted."""
    if not relayed_via:
        return "  none"
    lines = []
    for r in relayed_via:
        expires = r.get("expires_in")
        when = "pending" if expires is None else f"expires in {format_duration(expires)}"
        lines.append(f"  {r['relay']}  {when}")
        lines.extend(f"    {address}" for address in r.get("addresses") or [])
    return "\n".join(lines)


def format_relay(status: dict) -> str:
    """The ``peerctl relay`` report."""
    lines = [f"serving:        {'yes' if status['serving'] else 'no'}"]
    if status["serving"]:
        limits = format_limits(status["limits"])
        lines.append(f"limits:         {limits[0]}")
        lines.extend(f"                {line}" for line in limits[1:])
        lines.append(f"this month:     {format_monthly(status['monthly'])}")
        lines.append(f"reservations ({len(status['reservations'])}):")
        lines.append(format_reservations(status["reservations"]))
        lines.append(f"circuits ({len(status['circuits'])}):")
        lines.append(format_circuits(status["circuits"]))
    lines.append(f"reserving:      {'yes' if status.get('reserving') else 'no'}")
    relayed_via = status.get("relayed_via") or []
    if status.get("reserving") or relayed_via:
        lines.append(f"reserved on relays ({len(relayed_via)}):")
        lines.append(format_relayed_via(relayed_via))
    return "\n".join(lines)


# -- command --------------------------------------------------------------------------


class RelayCommand(Command):
    name = "relay"
    help = "show the relay: limits, reservations, circuits, usage; and our own reservations"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get(STATUS_ROUTE)
        show(args, data, format_relay)
        return EXIT_OK


COMMANDS: list[Command] = [RelayCommand()]
