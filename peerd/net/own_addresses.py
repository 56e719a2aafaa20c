"""
Which addresses this peer can be dialed at, from what it listens on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import psutil

from peerd.peerid import PeerAddress, PeerID

_WILDCARDS = {"0.0.0.0", "::", ""}


def interface_addresses(include_ipv6: bool) -> list[str]:
    """Unicast addresses of this machine's interfaces, loopback first."""
    found: list[str] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET or (include_ipv6 and entry.family == socket.AF_INET6):
                text = entry.address.split("%", 1)[0]
                try:
                    ip = ipaddress.ip_address(text)
                except ValueError:
                    continue
                if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                    continue
                found.append(text)
    return sorted(set(found), key=lambda a: (not ipaddress.ip_address(a).is_loopback, ":" in a, a))


def dialable_addresses(
    peer_id: PeerID,
    bound: Iterable[tuple[str, int]],
    announce: Iterable[PeerAddress] = (),
) -> list[str]:
    """
    ``PEERID@host:port`` strings for each bound ``(host, port)``; a
    wildcard host expands to every interface address. ``announce``, when
    given, replaces them all.
    """
    announced = [str(a.with_peer_id(peer_id)) for a in announce]
    if announced:
        return announced
    result: list[str] = []
    for host, port in bound:
        hosts = interface_addresses(include_ipv6=host == "::") if host in _WILDCARDS else [host]
        result.extend(str(PeerAddress(h, port, peer_id)) for h in hosts)
    return list(dict.fromkeys(result))
