"""
Storing a file: encrypt and erasure-code it segment by segment, place its
``n`` shares on ``n`` storage peers (or fewer, doubling up, if allowed) and
answer with the capability that finds, decrypts and verifies it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from peerd.providers.storage.capability import Capability, check_encoding, storage_index
from peerd.providers.storage.codec import Layout, SegmentEncoder
from peerd.providers.storage.jobs import Job, StorageClient, StorageFailed
from peerd.providers.storage.placement import permuted
from peerd.providers.storage.upload import Upload, share_size


def store(
    client: StorageClient, path: str, k: int, n: int, lease_seconds: float, allow_doubling: bool
) -> Job:
    """Start storing ``path``."""
    check_encoding(k, n)
    job = Job("store", clock=client.clock)
    return job.run(lambda j: _store(client, j, path, k, n, lease_seconds, allow_doubling))


async def _store(
    client: StorageClient,
    job: Job,
    path: str,
    k: int,
    n: int,
    lease_seconds: float,
    allow_doubling: bool,
) -> dict:
    f: BinaryIO = await client.node.run_in_thread(open, path, "rb")
    try:
        size = await client.node.run_in_thread(lambda: os.fstat(f.fileno()).st_size)
        job.size = size
        layout = Layout(size, k, n, client.segment_size)
        key = os.urandom(32)
        si = storage_index(key)
        peers = client.storage_peers()
        if not peers or (len(peers) < n and not allow_doubling):
            raise StorageFailed(
                f"found {len(peers)} storage peer{'s' if len(peers) != 1 else ''}; "
                f"storing {k}-of-{n} needs {n} distinct storage peers "
                + (
                    "(connect more peers that run the storage provider)"
                    if not peers
                    else f"(connect {n - len(peers)} more, use --total {len(peers)}, "
                    f"or --allow-doubling to put more than one share on a peer)"
                )
            )
        job.detail = "placing shares"
        upload = Upload(client, si, layout, share_size(layout), lease_seconds, allow_doubling)
        try:
            await upload.place(list(range(n)), permuted(peers, si))
            job.detail = "uploading"
            encoder = SegmentEncoder(key, layout)
            for seg in range(layout.segments):
                length = layout.plain_length(seg)
                blocks = await client.node.run_in_thread(_read_encode, f, encoder, length)
                await upload.send(seg, blocks)
                job.bytes_done += length
            await upload.drain()
            ueb = encoder.finish()
            cap = Capability(key, ueb.hash(), k, n, size)
            job.detail = "closing shares"
            ueb_bytes = ueb.encode()
            await upload.close(ueb_bytes, {sh: b"".join(h) for sh, h in enumerate(encoder.hashes)})
        finally:
            upload.end()
    finally:
        await client.node.run_in_thread(f.close)
    placed = upload.placed()
    if len(placed) < n:
        detail = "; ".join(upload.problems) or "unknown"
        hint = (
            f" — the data is retrievable; `peerctl repair {cap}` can complete it"
            if len(placed) >= k
            else ""
        )
        raise StorageFailed(f"placed only {len(placed)} of {n} shares ({detail}){hint}")
    return {
        "capability": str(cap),
        "size": size,
        "needed": k,
        "total": n,
        "storage_index": si.hex(),
        "placements": [{"share": sh, "peer": str(p)} for sh, p in sorted(placed.items())],
        "peers": len(set(placed.values())),
    }


def _read_encode(f: BinaryIO, encoder: SegmentEncoder, length: int) -> list[bytes]:
    """In a worker thread: read one segment and encode it."""
    data = f.read(length)
    if len(data) != length:
        raise StorageFailed("the file changed size while it was being stored")
    return encoder.encode(data)
