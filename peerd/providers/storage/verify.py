"""
Verifying shares: a share's trailer (its UEB must hash to the capability's,
its block hashes to the share root the UEB lists) and, deeply, every block
against its hash; :func:`check` asks every connected storage peer which
shares of a capability it holds and whether each is sound.
"""

from __future__ import annotations

from peerd.providers.storage.capability import Capability
from peerd.providers.storage.codec import UEB, block_hash, share_root, ueb_hash
from peerd.providers.storage.jobs import StorageClient
from peerd.providers.storage.protocol import ClientStream, RemoteError, StreamGone
from peerd.providers.storage.share_files import HASH


class ShareBad(Exception):
    """A share that cannot be used: ``corrupt`` when it failed verification."""

    def __init__(self, why: str, corrupt: bool) -> None:
        super().__init__(why)
        self.why = why
        self.corrupt = corrupt


async def load_trailer(stream: ClientStream, cap: Capability, sh: int) -> tuple[bytes, UEB, bytes]:
    """Fetch and verify a share's UEB and block hashes. :raises ShareBad:"""
    try:
        answer = await stream.call({"t": "trailer", "si": cap.index_hex, "sh": sh})
    except RemoteError as e:
        raise ShareBad(e.why, e.corrupt) from None
    except StreamGone as e:
        raise ShareBad(f"unreachable: {e}", False) from None
    ueb_len = answer.header.get("ueb")
    if not isinstance(ueb_len, int) or not 0 <= ueb_len <= len(answer.body):
        raise ShareBad("malformed trailer", True)
    ueb_bytes, hashes = answer.body[:ueb_len], answer.body[ueb_len:]
    if ueb_hash(ueb_bytes) != cap.ueb_hash:
        raise ShareBad("its UEB does not match the capability", True)
    ueb = UEB.decode(ueb_bytes)
    lay = ueb.layout
    if (lay.k, lay.n, lay.size) != (cap.k, cap.n, cap.size) or sh >= lay.n:
        raise ShareBad("its UEB does not match the capability", True)
    if len(hashes) != lay.segments * HASH or share_root(sh, hashes) != ueb.roots[sh]:
        raise ShareBad("its block hashes do not match its share root", True)
    return ueb_bytes, ueb, hashes


async def verify_share(
    client: StorageClient, stream: ClientStream, cap: Capability, sh: int, deep: bool
) -> tuple[str, str]:
    """``("ok" | "corrupt" | "unavailable", why)`` for one share on one server."""
    try:
        _, ueb, hashes = await load_trailer(stream, cap, sh)
        if deep:
            for seg in range(ueb.layout.segments):
                block = await read_block(stream, cap, sh, seg)
                good = await client.node.run_in_thread(check_block, sh, seg, block, hashes)
                if not good:
                    raise ShareBad(f"block {seg} does not match its hash", True)
    except ShareBad as e:
        return ("corrupt" if e.corrupt else "unavailable"), e.why
    return "ok", ""


async def read_block(stream: ClientStream, cap: Capability, sh: int, seg: int) -> bytes:
    try:
        answer = await stream.call({"t": "read", "si": cap.index_hex, "sh": sh, "seg": seg})
    except RemoteError as e:
        raise ShareBad(e.why, e.corrupt) from None
    except StreamGone as e:
        raise ShareBad(f"unreachable: {e}", False) from None
    return answer.body


def check_block(sh: int, seg: int, block: bytes, hashes: bytes) -> bool:
    return block_hash(sh, seg, block) == hashes[seg * HASH : (seg + 1) * HASH]


def bad_blocks(seg: int, blocks: dict[int, bytes], hashes: dict[int, bytes]) -> list[int]:
    """In a worker thread: the shares whose block ``seg`` fails its hash."""
    return [sh for sh, block in blocks.items() if not check_block(sh, seg, block, hashes[sh])]


async def check(client: StorageClient, cap: Capability, verify: bool = False) -> dict:
    """Who holds which share, is each sound, is the data retrievable."""
    peers = client.storage_peers()
    streams, answers = await client.locate(cap.storage_index, peers)
    shares = []
    try:
        for peer, held in answers.items():
            if not isinstance(held, list):
                continue
            for sh in held:
                status, why = await verify_share(client, streams[peer], cap, sh, verify)
                shares.append({"share": sh, "peer": str(peer), "status": status, "why": why})
    finally:
        for stream in streams.values():
            stream.close()
    good = sorted({s["share"] for s in shares if s["status"] == "ok"})
    return {
        "storage_index": cap.index_hex,
        "needed": cap.k,
        "total": cap.n,
        "size": cap.size,
        "shares": shares,
        "good_shares": len(good),
        "missing": [sh for sh in range(cap.n) if sh not in good],
        "retrievable": len(good) >= cap.k,
        "healthy": len(good) == cap.n,
        "peers_asked": len(peers),
        "peers": {str(p): a if isinstance(a, list) else {"error": a} for p, a in answers.items()},
    }
