"""
Which addresses this peer can be dialed at: from what it listens on, what is
configured to be announced, and the relayed addresses its reservations give it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

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


class OwnAddresses:
    """
    The addresses this peer announces as its own: the direct ones it is
    listening on (or those configured in ``[network] announce``) and the
    relayed ones its reservations give it.

    :param peer_id: this peer's PeerID, put in front of every address.
    :param announce: ``[network] announce``; when not empty, replaces the
        direct addresses.
    :param reachable: whether this peer accepts inbound connections.
    :param changed: called with every address (:meth:`all`) when the relayed
        ones change, so that connected peers can be told.
    """

    def __init__(
        self,
        peer_id: PeerID,
        *,
        announce: Iterable[PeerAddress] = (),
        reachable: bool = True,
        changed: Callable[[list[str]], None] = lambda addresses: None,
    ) -> None:
        self.peer_id = peer_id
        self.announce = list(announce)
        self.reachable = reachable
        self.changed = changed
        self.bound: list[tuple[str, int]] = []
        self.relayed: list[str] = []

    def listening_on(self, host: str, port: int) -> None:
        """Record that this peer listens on ``host:port`` (a wildcard host is expanded)."""
        self.bound = [(host, port)]

    def direct(self) -> list[str]:
        """The direct dialable addresses, ``PEERID@host:port``."""
        return dialable_addresses(self.peer_id, self.bound, self.announce)

    def all(self) -> list[str]:
        """Direct and relayed addresses, as announced to peers."""
        return self.direct() + self.relayed

    def set_relayed(self, addresses: list[str]) -> bool:
        """Replace the relayed addresses; returns whether they changed (and tells ``changed``)."""
        if addresses == self.relayed:
            return False
        self.relayed = list(addresses)
        self.changed(self.all())
        return True
