"""
Choosing holders (pure): the order in which a storage index visits peers,
and how shares are spread over the peers chosen.
"""

from __future__ import annotations

import hashlib
from typing import Any


def permuted(peers: list[Any], si: bytes) -> list[Any]:
    """Peers in the order of ``sha256(si + peer)``: each index spreads over different peers."""
    return sorted(peers, key=lambda p: hashlib.sha256(si + p.digest).digest())


def spread(shnums: list[int], peers: list[Any], allow_doubling: bool) -> dict[Any, list[int]]:
    """
    Assign shares to peers: one each while peers last; the rest (with
    ``allow_doubling`` only) round robin over the same peers again.
    """
    plan: dict[Any, list[int]] = {}
    if not peers:
        return plan
    for i, sh in enumerate(shnums):
        if i >= len(peers) and not allow_doubling:
            break
        plan.setdefault(peers[i % len(peers)], []).append(sh)
    return plan
