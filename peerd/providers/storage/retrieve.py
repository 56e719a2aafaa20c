"""
Retrieving a file: find ``k`` sound shares among the connected storage
peers, read their blocks segment by segment (replacing any share that
fails), decode, decrypt and verify, and land the file atomically.

Every share is checked before its blocks are used (:mod:`.verify`); a share
that fails is skipped and reported, and another takes its place.
:class:`Fetcher` also feeds repair (:mod:`.maintain`).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet import defer

from peerd.disk import land, temp_beside
from peerd.providers.storage.capability import Capability
from peerd.providers.storage.codec import UEB, IntegrityError, SegmentDecoder
from peerd.providers.storage.jobs import PIPELINE, Job, StorageClient, StorageFailed
from peerd.providers.storage.placement import permuted
from peerd.providers.storage.protocol import ClientStream
from peerd.providers.storage.share_files import HASH
from peerd.providers.storage.verify import ShareBad, bad_blocks, load_trailer, read_block


class _Source:
    """One verified share on one server that blocks are read from."""

    def __init__(
        self, peer: Any, sh: int, stream: ClientStream, cap: Capability, hashes: bytes
    ) -> None:
        self.peer = peer
        self.sh = sh
        self.stream = stream
        self.cap = cap
        self.hashes = hashes
        self.segments = len(hashes) // HASH
        self.requests: dict[int, defer.Deferred] = {}

    def request(self, seg: int) -> None:
        if seg < self.segments and seg not in self.requests:
            d = defer.Deferred.fromCoroutine(read_block(self.stream, self.cap, self.sh, seg))
            d.addErrback(_Failed)  # held until taken: never an "unhandled error"
            self.requests[seg] = d

    def take(self, seg: int) -> defer.Deferred:
        self.request(seg)
        return self.requests.pop(seg).addCallback(_reraise)


class _Failed:
    def __init__(self, failure: Any) -> None:
        self.failure = failure


def _reraise(value: Any) -> Any:
    if isinstance(value, _Failed):
        return value.failure
    return value


class Fetcher:
    """Reads verified blocks from ``k`` shares, replacing any that fail."""

    def __init__(self, client: StorageClient, cap: Capability) -> None:
        self.client = client
        self.cap = cap
        self.active: list[_Source] = []
        self.candidates: deque[tuple[int, Any]] = deque()
        self.corrupt: list[dict] = []
        self.unavailable: list[dict] = []
        self.answers: dict[Any, Any] = {}
        self.streams: dict[Any, ClientStream] = {}
        self.ueb: UEB | None = None
        self.ueb_bytes = b""
        self.next_seg = 0
        self.peers_asked = 0

    async def start(self) -> None:
        """Find holders and pick ``k`` sound shares. :raises StorageFailed:"""
        si = self.cap.storage_index
        peers = self.client.storage_peers()
        self.peers_asked = len(peers)
        self.streams, self.answers = await self.client.locate(si, peers)
        order = permuted(list(self.answers), si)
        held = sorted(
            {sh for a in self.answers.values() if isinstance(a, list) for sh in a},
            key=lambda sh: (sh >= self.cap.k, sh),  # primary shares decode fastest
        )
        for sh in held:
            for peer in order:
                answer = self.answers[peer]
                if isinstance(answer, list) and sh in answer:
                    self.candidates.append((sh, peer))
        while len(self.active) < self.cap.k:
            await self._add_source()

    def _found(self) -> set[int]:
        bad = {(c["share"], c["peer"]) for c in self.corrupt}
        return {
            sh
            for peer, a in self.answers.items()
            if isinstance(a, list)
            for sh in a
            if (sh, str(peer)) not in bad
        }

    def not_enough(self) -> str:
        """The "found J of the K shares needed" message, with what was tried."""
        found = len(self._found())
        tried = []
        for peer, answer in self.answers.items():
            if isinstance(answer, list):
                tried.append(f"{peer.short}: shares {answer}" if answer else f"{peer.short}: none")
            else:
                tried.append(f"{peer.short}: {answer}")
        for c in self.corrupt:
            tried.append(f"share {c['share']} on {c['peer'][:6]} corrupt ({c['why']})")
        for c in self.unavailable:
            tried.append(f"share {c['share']} on {c['peer'][:6]} unavailable ({c['why']})")
        asked = f"asked {self.peers_asked} storage peer{'s' if self.peers_asked != 1 else ''}"
        return (
            f"found {found} of the {self.cap.k} shares needed ({asked}"
            + (": " + "; ".join(tried) if tried else "")
            + ")"
        )

    async def _add_source(self) -> None:
        later = []
        try:
            while self.candidates:
                sh, peer = self.candidates.popleft()
                if any(s.sh == sh for s in self.active):
                    later.append((sh, peer))
                    continue
                try:
                    ueb_bytes, ueb, hashes = await load_trailer(self.streams[peer], self.cap, sh)
                except ShareBad as e:
                    self._report(peer, sh, e.why, e.corrupt)
                    continue
                if self.ueb is None:
                    self.ueb, self.ueb_bytes = ueb, ueb_bytes
                source = _Source(peer, sh, self.streams[peer], self.cap, hashes)
                self.active.append(source)
                for seg in range(self.next_seg, self.next_seg + PIPELINE):
                    source.request(seg)
                return
        finally:
            self.candidates.extend(later)
        raise StorageFailed(self.not_enough())

    def _report(self, peer: Any, sh: int, why: str, corrupt: bool) -> None:
        entry = {"share": sh, "peer": str(peer), "why": why}
        (self.corrupt if corrupt else self.unavailable).append(entry)
        if corrupt:
            self.client.node.log.warn(
                "storage: share {sh} of {si} on {peer} is corrupt: {why}",
                sh=sh,
                si=self.cap.index_hex,
                peer=peer,
                why=why,
            )

    async def blocks(self, seg: int) -> dict[int, bytes]:
        """``k`` verified blocks of segment ``seg`` (segments are asked for in order)."""
        self.next_seg = seg
        got: dict[int, bytes] = {}
        while True:
            sources = [s for s in self.active if s.sh not in got]
            results = await defer.DeferredList([s.take(seg) for s in sources], consumeErrors=True)
            fresh: dict[int, bytes] = {}
            failed: list[tuple[_Source, str, bool]] = []
            for source, (ok, value) in zip(sources, results, strict=True):
                if ok:
                    fresh[source.sh] = value
                else:
                    error = value.value
                    corrupt = isinstance(error, ShareBad) and error.corrupt
                    failed.append((source, getattr(error, "why", str(error)), corrupt))
            expected = {s.sh: s.hashes for s in sources}
            bad = await self.client.node.run_in_thread(bad_blocks, seg, fresh, expected)
            for source in sources:
                if source.sh in bad:
                    failed.append((source, f"block {seg} does not match its hash", True))
                elif source.sh in fresh:
                    got[source.sh] = fresh[source.sh]
            if not failed:
                for source in self.active:
                    source.request(seg + PIPELINE)
                return got
            for source, why, corrupt in failed:
                self.active.remove(source)
                self._report(source.peer, source.sh, why, corrupt)
            self.next_seg = seg
            while len(self.active) < self.cap.k:
                await self._add_source()

    def end(self) -> None:
        """Close the streams."""
        for stream in self.streams.values():
            stream.close()


# -- retrieve ------------------------------------------------------------------------------------


def retrieve(client: StorageClient, cap: Capability, destination: str, force: bool) -> Job:
    """Start retrieving ``cap`` into ``destination``."""
    job = Job("retrieve", size=cap.size, clock=client.clock)
    return job.run(lambda j: _retrieve(client, j, cap, destination, force))


def _open_temp(destination: str) -> tuple[BinaryIO, Path]:
    return temp_beside(Path(destination), suffix=".part")


def _decode_write(decoder: SegmentDecoder, blocks: dict[int, bytes], f: BinaryIO) -> None:
    f.write(decoder.decode(blocks))


def _finish(
    decoder: SegmentDecoder, f: BinaryIO, temp: Path, destination: str, force: bool
) -> None:
    decoder.finish()
    f.close()
    land(temp, destination, replace=force)


def _discard(f: BinaryIO, temp: Path) -> None:
    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


async def _retrieve(
    client: StorageClient, job: Job, cap: Capability, destination: str, force: bool
) -> dict:
    run = client.node.run_in_thread
    fetcher = Fetcher(client, cap)
    job.detail = "finding shares"
    try:
        await fetcher.start()
        assert fetcher.ueb is not None
        decoder = SegmentDecoder(cap.key, fetcher.ueb)
        layout = fetcher.ueb.layout
        f, temp = await run(_open_temp, destination)
        job.detail = "downloading"
        try:
            for seg in range(layout.segments):
                blocks = await fetcher.blocks(seg)
                try:
                    await run(_decode_write, decoder, blocks, f)
                except IntegrityError as e:
                    raise StorageFailed(f"{e}: the shares are sound but do not decrypt") from None
                job.bytes_done += layout.plain_length(seg)
            try:
                await run(_finish, decoder, f, temp, destination, force)
            except IntegrityError as e:
                raise StorageFailed(str(e)) from None
            except FileExistsError:
                raise StorageFailed(f"{destination} exists (use --force to replace it)") from None
        except BaseException:
            await run(_discard, f, temp)
            raise
    finally:
        fetcher.end()
    return {
        "path": destination,
        "size": cap.size,
        "verified": True,
        "sources": [{"share": s.sh, "peer": str(s.peer)} for s in fetcher.active],
        "corrupt": fetcher.corrupt,
        "unavailable": fetcher.unavailable,
    }
