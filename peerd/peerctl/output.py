"""Rendering API answers for the terminal (or as JSON with ``--json``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence


def format_duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``12.3 MiB`` ..."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_providers(providers: dict) -> str:
    """``{"files": "1"}`` as ``files/1``; ``-`` for none."""
    return ", ".join(f"{name}/{version}" for name, version in sorted(providers.items())) or "-"


def format_table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns separated by two spaces; the first row may be a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def format_peers(peers: list, now: float) -> str:
    """The ``peerctl peers`` table."""
    if not peers:
        return "no peers connected"
    rows = [("PEER", "ADDRESS", "DIR", "PROVIDERS", "CONNECTED")]
    rows += [
        (
            p["peer_id"],
            f"via relay {p['relay']}" if p.get("relay") else p["address"],
            p["direction"],
            format_providers(p.get("providers", {})),
            format_duration(now - p["since"]),
        )
        for p in peers
    ]
    return format_table(rows)


def _format_status_fields(status: object) -> str:
    if not isinstance(status, dict):
        return str(status)
    return " ".join(
        f"{k}={v}" for k, v in sorted(status.items()) if not isinstance(v, (dict, list))
    )


def format_provider_listing(data: dict) -> str:
    """The ``peerctl providers`` listing."""
    local = data.get("local", {})
    lines = ["local providers:"]
    if local:
        rows = [
            (name, str(info.get("version", "?")), _format_status_fields(info.get("status", {})))
            for name, info in sorted(local.items())
        ]
        lines.append(format_table(rows, indent="  "))
    else:
        lines.append("  none")
    peers = data.get("peers", {})
    lines.append("connected peers offer:")
    if peers:
        lines.extend(
            f"  {peer_id}  {format_providers(offer)}" for peer_id, offer in sorted(peers.items())
        )
    else:
        lines.append("  no peers connected")
    return "\n".join(lines)


def format_status(status: dict) -> str:
    """The ``peerctl status`` block."""
    c = status.get("connections", {})
    connections = f"{c.get('total', 0)} ({c.get('inbound', 0)} in, {c.get('outbound', 0)} out"
    connections += f", max {c.get('max', '?')})"
    providers = {n: p.get("version", "?") for n, p in status.get("providers", {}).items()}
    traffic = f"{format_bytes(status.get('bytes_in', 0))} in"
    traffic += f", {format_bytes(status.get('bytes_out', 0))} out"
    rows = [
        ("peer ID", [status["peer_id"]]),
        ("agent", [str(status.get("agent", "?"))]),
        ("uptime", [format_duration(status.get("uptime", 0))]),
        ("listen", status.get("listen") or ["-"]),
        ("addresses", status.get("addresses") or ["-"]),
        ("connections", [connections]),
        ("providers", [format_providers(providers)]),
        ("traffic", [traffic]),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, values in rows:
        for i, value in enumerate(values):
            lines.append(f"{(label + ':') if i == 0 else '':<{width}}{value}")
    return "\n".join(lines)


def show(args: argparse.Namespace, data: object, render: Callable[[object], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else as ``render(data)``."""
    if args.json:
        print(json.dumps(data, sort_keys=True, indent=2))
    else:
        print(render(data))
