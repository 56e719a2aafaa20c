"""
Source lookup by peer exchange: ask every connected peer which other peers
hold or want a content ID (an :class:`~peerd.interfaces.ISourceLookup`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from peerd.interfaces import ISourceLookup

PEX_WAIT = 2.0


@implementer(ISourceLookup)
class PeerExchangeLookup:
    """
    Sends ``pex?`` to each connected files peer and collects the ``pex``
    answers that arrive within :data:`PEX_WAIT` seconds.

    :param host: the files provider (``request``, ``file_peers``, ``clock``).
    """

    def __init__(self, host: Any, wait: float = PEX_WAIT) -> None:
        self.host = host
        self.wait = wait
        self._pending: dict[str, list[tuple[defer.Deferred, set[str]]]] = {}

    def find_sources(self, content_id: str) -> defer.Deferred:
        """Ask every connected files peer; fire with what they say within the wait."""
        found: set[str] = set()
        d: defer.Deferred = defer.Deferred()
        peers = self.host.file_peers()
        if not peers:
            d.callback([])
            return d
        entry = (d, found)
        self._pending.setdefault(content_id, []).append(entry)
        for peer_id in peers:
            self.host.request(peer_id, {"t": "pex?", "cid": content_id})
        self.host.clock.callLater(self.wait, self._finish, content_id, entry)
        return d

    def answer(self, content_id: str, addresses: list) -> None:
        """A ``pex`` answer arrived."""
        for _, found in self._pending.get(content_id, []):
            found.update(a for a in addresses[:64] if isinstance(a, str) and len(a) < 300)

    def _finish(self, content_id: str, entry: tuple[defer.Deferred, set[str]]) -> None:
        waiting = self._pending.get(content_id, [])
        if entry in waiting:
            waiting.remove(entry)
        if not waiting:
            self._pending.pop(content_id, None)
        d, found = entry
        d.callback(sorted(found))
