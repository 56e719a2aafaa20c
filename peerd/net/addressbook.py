"""
The address book: every peer this peer has had a session with, the
addresses it announced, and when it was last seen.  Kept in
``<data_dir>/peers.json`` (written atomically), so a PeerID learnt by
dialing a bare ``host:port`` is recorded, and discovery can redial known
peers after a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from peerd.disk import write_atomically
from peerd.interfaces import IDiscoverySource, IPeerInfo, IPeerObserver
from peerd.peerid import InvalidAddress, InvalidPeerID, PeerAddress, PeerID

log = Logger()

MAX_ENTRIES = 1000
MAX_ADDRESSES = 8


@dataclass
class KnownPeer:
    """What we remember of one peer."""

    peer_id: PeerID
    addresses: list[str] = field(default_factory=list)
    last_seen: float = 0.0


@implementer(IPeerObserver, IDiscoverySource)
class AddressBook:
    """
    Records peers as sessions start and end; bounded to ``MAX_ENTRIES``
    (the least recently seen are forgotten first).
    """

    def __init__(self, path: Path, now: object) -> None:
        self.path = path
        self._now = now
        self.peers: dict[PeerID, KnownPeer] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            entries = raw["peers"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warn(
                "ignoring unreadable address book {path}: {error}",
                path=str(self.path),
                error=str(e),
            )
            return
        for text, entry in entries.items():
            try:
                peer_id = PeerID.parse(text)
                addresses = [str(a) for a in entry.get("addresses", [])][:MAX_ADDRESSES]
                self.peers[peer_id] = KnownPeer(
                    peer_id, addresses, float(entry.get("last_seen", 0))
                )
            except (InvalidPeerID, AttributeError, TypeError, ValueError):
                continue

    def save(self) -> None:
        """Write the book atomically."""
        data = {
            "version": 1,
            "peers": {
                str(p.peer_id): {"addresses": p.addresses, "last_seen": p.last_seen}
                for p in self.peers.values()
            },
        }
        try:
            write_atomically(self.path, json.dumps(data, indent=1).encode(), replace=True)
        except OSError as e:
            log.warn(
                "cannot save the address book {path}: {error}", path=str(self.path), error=str(e)
            )

    def record(self, info: IPeerInfo) -> None:
        """Remember ``info``'s announced addresses and that we see it now."""
        known = self.peers.setdefault(info.peer_id, KnownPeer(info.peer_id))
        if info.listen_addresses:
            known.addresses = list(info.listen_addresses)[:MAX_ADDRESSES]
        known.last_seen = self._now()  # type: ignore[operator]
        if len(self.peers) > MAX_ENTRIES:
            oldest = min(self.peers.values(), key=lambda p: p.last_seen)
            del self.peers[oldest.peer_id]

    def peer_connected(self, peer: IPeerInfo) -> None:
        """A session started: record and save."""
        self.record(peer)
        self.save()

    def peer_disconnected(self, peer: IPeerInfo, reason: str) -> None:
        """A session ended: note when we last saw it."""
        self.record(peer)
        self.save()

    def addresses_of(self, peer_id: PeerID) -> list[PeerAddress]:
        """The remembered addresses of one peer, parsed (unparseable ones skipped)."""
        known = self.peers.get(peer_id)
        result = []
        for text in known.addresses if known is not None else []:
            try:
                result.append(PeerAddress.parse(text))
            except InvalidAddress:
                continue
        return result

    def addresses(self) -> list[str]:
        """Every remembered address, most recently seen peers first."""
        ordered = sorted(self.peers.values(), key=lambda p: -p.last_seen)
        return [a for p in ordered for a in p.addresses]
