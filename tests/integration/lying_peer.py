"""
A test double: a real peer whose files provider serves corrupt blocks.

Usage: ``python lying_peer.py --config FILE``.  It starts peerd exactly as
``twistd -n --pidfile= peerd --config FILE`` does, after replacing
:meth:`peerd.providers.files.upload.share_index.ShareIndex.read_block` with a version
that flips one byte of every block it returns (the Merkle proof is kept, so
only the block's own hash check can catch the lie).  Everything else --
identity, handshake, manifest, leaf hashes, bitfields -- is honest.
"""

from __future__ import annotations

import sys
from typing import Any

from peerd.providers.files.upload.share_index import ShareIndex

_honest_read_block = ShareIndex.read_block


def _lying_read_block(self: ShareIndex, cid: Any, index: int) -> Any:
    result = _honest_read_block(self, cid, index)
    if result is None:
        return None
    data, proof = result
    corrupt = bytearray(data)
    if corrupt:
        corrupt[len(corrupt) // 2] ^= 0xFF
    return bytes(corrupt), proof


def main(argv: list[str]) -> None:
    """Patch the share index, then hand over to twistd."""
    from twisted.scripts.twistd import run

    ShareIndex.read_block = _lying_read_block  # type: ignore[method-assign]
    sys.argv = ["twistd", "-n", "--pidfile=", "peerd", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
