"""
Writing the shares of one storage index to their servers: allocate (with
replacements for peers that refuse), write segment by segment with at most
:data:`~.jobs.PIPELINE` segments in flight, close.  Used by :mod:`.store`
and, for the shares it regenerates, by :mod:`.maintain`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import defer

from peerd.providers.storage.codec import UEB, Layout, share_root
from peerd.providers.storage.jobs import (
    PIPELINE,
    StorageClient,
    StorageFailed,
    int_list,
    lease_secret,
    owner_id,
)
from peerd.providers.storage.placement import spread
from peerd.providers.storage.protocol import ClientStream, RemoteError, StreamGone
from peerd.providers.storage.share_files import overhead


def ueb_length(layout: Layout) -> int:
    """The exact encoded length of a UEB of ``layout``."""
    return len(UEB(layout, (bytes(32),) * layout.n, bytes(32)).encode())


def share_size(layout: Layout) -> int:
    """The bytes a server allocates for one share of ``layout``."""
    return layout.blocks_size() + overhead(layout.segments, ueb_length(layout))


class Upload:
    """Shares of one storage index being written to their servers."""

    def __init__(
        self,
        client: StorageClient,
        si: bytes,
        layout: Layout,
        share_size: int,
        lease_seconds: float,
        allow_doubling: bool,
    ) -> None:
        self.client = client
        self.si = si
        self.layout = layout
        self.share_size = share_size
        self.lease_seconds = lease_seconds
        self.allow_doubling = allow_doubling
        self.writers: dict[int, tuple[Any, ClientStream]] = {}
        self.already: dict[int, Any] = {}
        self.closed: dict[int, Any] = {}
        self.failed: set[int] = set()
        self.problems: list[str] = []
        self.streams: dict[Any, ClientStream] = {}
        self._inflight: deque[defer.Deferred] = deque()

    async def _allocate(self, peer: Any, shnums: list[int]) -> list[int]:
        """Allocate on ``peer``; the shares it took (or already had)."""
        try:
            stream = self.streams.get(peer)
            if stream is None:
                stream = self.streams[peer] = await self.client.open(peer)
            secret = lease_secret(self.client.client_secret, self.si, peer)
            answer = await stream.call(
                {
                    "t": "allocate",
                    "si": self.si.hex(),
                    "shares": shnums,
                    "size": self.share_size,
                    "owner": owner_id(self.client.client_secret, peer),
                    "secret": secret,
                    "lease": self.lease_seconds,
                }
            )
        except (RemoteError, StreamGone, Exception) as e:
            self.problems.append(f"{peer.short}: {getattr(e, 'why', None) or e}")
            return []
        taken = []
        for sh in int_list(answer.header.get("new")):
            if sh in shnums:
                self.writers[sh] = (peer, stream)
                taken.append(sh)
        for sh in int_list(answer.header.get("have")):
            if sh in shnums and sh not in taken:
                self.already[sh] = peer
                taken.append(sh)
        return taken

    async def place(self, shnums: list[int], order: list[Any], avoid: set | None = None) -> None:
        """
        Allocate ``shnums`` on peers in ``order`` (one share each; more only
        with doubling); a peer that refuses is replaced by the next one.
        """
        avoid = set(avoid or ())
        candidates = [p for p in order if p not in avoid]
        unplaced = list(shnums)
        used: list[Any] = []
        while unplaced and candidates:
            batch = candidates[: len(unplaced)]
            candidates = candidates[len(batch) :]
            plan = spread(unplaced, batch, False)
            results = await defer.gatherResults(
                [
                    defer.Deferred.fromCoroutine(self._allocate(peer, shs))
                    for peer, shs in plan.items()
                ]
            )
            for (peer, _), taken in zip(plan.items(), results, strict=True):
                if taken:
                    used.append(peer)
                unplaced = [sh for sh in unplaced if sh not in taken]
        if unplaced and self.allow_doubling and used:
            plan = spread(unplaced, used, True)
            for peer, shs in plan.items():
                taken = await self._allocate(peer, shs)
                unplaced = [sh for sh in unplaced if sh not in taken]
        if unplaced:
            self.end()
            problems = "; ".join(self.problems)
            raise StorageFailed(
                f"could not place {len(unplaced)} of {len(shnums)} shares on "
                f"{len(order)} storage peers"
                + (f" ({problems})" if problems else "")
                + (
                    ""
                    if self.allow_doubling
                    else " (--allow-doubling would allow more than one share per peer)"
                )
            )

    async def send(self, seg: int, blocks: dict[int, bytes] | list[bytes]) -> None:
        """Write block ``seg`` of every share; wait while too many segments are in flight."""
        calls = []
        for sh, (peer, stream) in self.writers.items():
            if sh in self.failed:
                continue
            d = stream.call({"t": "write", "sh": sh, "seg": seg}, blocks[sh])
            d.addErrback(self._share_failed, sh, peer)
            calls.append(d)
        self._inflight.append(defer.DeferredList(calls))
        while len(self._inflight) > PIPELINE:
            await self._inflight.popleft()
        if self.writers and len(self.failed) == len(self.writers):
            raise StorageFailed("every storage peer failed: " + "; ".join(self.problems))

    async def drain(self) -> None:
        """Wait for every write in flight."""
        while self._inflight:
            await self._inflight.popleft()

    def _share_failed(self, failure: Any, sh: int, peer: Any) -> None:
        if sh not in self.failed:
            self.failed.add(sh)
            self.problems.append(
                f"share {sh} on {peer.short}: {getattr(failure.value, 'why', None) or failure.value}"
            )

    async def close(self, ueb: bytes, hashes: dict[int, bytes]) -> None:
        """Close every share that was written without error."""
        calls = []
        roots = UEB.decode(ueb).roots
        for sh, (peer, stream) in self.writers.items():
            if sh in self.failed:
                continue
            if share_root(sh, hashes[sh]) != roots[sh]:
                raise StorageFailed(f"share {sh}: hashes do not match the UEB (a bug)")
            d = stream.call({"t": "close", "sh": sh, "ueb": len(ueb)}, ueb + hashes[sh])
            d.addCallback(lambda _, sh=sh, peer=peer: self.closed.__setitem__(sh, peer))
            d.addErrback(self._share_failed, sh, peer)
            calls.append(d)
        await defer.DeferredList(calls)

    def placed(self) -> dict[int, Any]:
        """Shares now held: closed ones and ones the servers already had."""
        return {**self.already, **self.closed}

    def end(self) -> None:
        """Close our streams (servers throw away shares not closed)."""
        for stream in self.streams.values():
            stream.close()
