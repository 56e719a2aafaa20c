"""
Keeping stored data alive: :func:`renew` extends our leases on every server
holding shares of a capability; :func:`repair` regenerates missing shares
from ``k`` sound ones onto peers that lack one.
"""

from __future__ import annotations

from peerd.providers.storage.capability import Capability
from peerd.providers.storage.codec import Regenerator
from peerd.providers.storage.jobs import Job, StorageClient, StorageFailed, lease_secret
from peerd.providers.storage.placement import permuted
from peerd.providers.storage.protocol import RemoteError, StreamGone
from peerd.providers.storage.retrieve import Fetcher
from peerd.providers.storage.upload import Upload, share_size
from peerd.providers.storage.verify import check


async def renew(client: StorageClient, cap: Capability, lease_seconds: float) -> dict:
    """Extend our lease on every server holding shares of ``cap``."""
    si = cap.storage_index
    streams, answers = await client.locate(si, client.storage_peers())
    results = {}
    try:
        for peer, held in answers.items():
            if not isinstance(held, list) or not held:
                continue
            secret = lease_secret(client.client_secret, si, peer)
            try:
                answer = await streams[peer].call(
                    {"t": "renew", "si": si.hex(), "secret": secret, "lease": lease_seconds}
                )
                ok = answer.header.get("ok") is True
                results[str(peer)] = {"shares": held, "renewed": ok}
            except (RemoteError, StreamGone) as e:
                results[str(peer)] = {"shares": held, "renewed": False, "error": str(e)}
    finally:
        for stream in streams.values():
            stream.close()
    if not results:
        raise StorageFailed(f"no connected storage peer holds shares of {cap.index_hex}")
    return {
        "storage_index": cap.index_hex,
        "lease_seconds": lease_seconds,
        "servers": results,
        "renewed": sum(1 for r in results.values() if r["renewed"]),
    }


def repair(
    client: StorageClient, cap: Capability, lease_seconds: float, allow_doubling: bool
) -> Job:
    """Start repairing ``cap``."""
    job = Job("repair", size=cap.size, clock=client.clock)
    return job.run(lambda j: _repair(client, j, cap, lease_seconds, allow_doubling))


async def _repair(
    client: StorageClient, job: Job, cap: Capability, lease_seconds: float, allow_doubling: bool
) -> dict:
    job.detail = "checking"
    before = await check(client, cap)
    if not before["missing"]:
        return {"repaired": [], "before": before, "healthy": True}
    if not before["retrievable"]:
        found = before["good_shares"]
        raise StorageFailed(
            f"found {found} of the {cap.k} shares needed: cannot repair "
            f"(asked {before['peers_asked']} storage peers)"
        )
    fetcher = Fetcher(client, cap)
    upload = None
    try:
        await fetcher.start()
        assert fetcher.ueb is not None
        layout = fetcher.ueb.layout
        si = cap.storage_index
        holders = {p for p, a in fetcher.answers.items() if isinstance(a, list) and a}
        order = permuted(client.storage_peers(), si)
        targets = [p for p in order if p not in holders]
        if allow_doubling:
            targets += [p for p in order if p in holders]
        upload = Upload(client, si, layout, share_size(layout), lease_seconds, allow_doubling)
        job.detail = "placing shares"
        await upload.place(before["missing"], targets)
        regen = Regenerator(layout, sorted(upload.writers))
        job.detail = "regenerating shares"
        for seg in range(layout.segments):
            blocks = await fetcher.blocks(seg)
            new = await client.node.run_in_thread(regen.regenerate, seg, blocks)
            await upload.send(seg, new)
            job.bytes_done += layout.plain_length(seg)
        await upload.drain()
        await upload.close(fetcher.ueb_bytes, {sh: b"".join(h) for sh, h in regen.hashes.items()})
    finally:
        fetcher.end()
        if upload is not None:
            upload.end()
    placed = upload.placed()
    result = {
        "repaired": [{"share": sh, "peer": str(p)} for sh, p in sorted(placed.items())],
        "failed": upload.problems,
        "corrupt": fetcher.corrupt,
        "before": before,
    }
    if len(placed) < len(before["missing"]):
        raise StorageFailed(
            f"repaired {len(placed)} of {len(before['missing'])} missing shares: "
            + "; ".join(upload.problems)
        )
    result["healthy"] = len(placed) == len(before["missing"])
    return result
