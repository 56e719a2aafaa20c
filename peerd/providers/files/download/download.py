"""
:class:`Download`: one swarm download, from finding sources to the verified
file in place.

States (:class:`DownloadState`): ``finding-sources`` (no peer has offered
the content yet) -> ``fetching-metadata`` (manifest and leaf hashes from one
source, checked against the content ID) -> ``downloading`` (blocks from
every source in parallel, as the :class:`~.swarm.Swarm` asks for them, each
verified before it is written) -> ``finishing`` (fsync and rename into
place) -> ``complete``; or ``failed`` / ``cancelled``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from peerd.providers.files import bitfield
from peerd.providers.files.content import ContentID, Manifest
from peerd.providers.files.download.picker import BlockPicker
from peerd.providers.files.download.swarm import Source, Swarm, SwarmHost
from peerd.providers.files.merkle import leaf_hash, root_from_leaves
from peerd.ratelimit import Meter

log = Logger()

TICK = 0.5
CHECKPOINT_INTERVAL = 1.0
LOOKUP_INTERVAL = 10.0
WANTED_SOURCES = 8


class DownloadState(StrEnum):
    """Where a download is; the values are what the API shows."""

    FINDING_SOURCES = "finding-sources"
    FETCHING_METADATA = "fetching-metadata"
    DOWNLOADING = "downloading"
    FINISHING = "finishing"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


_FINISHED = frozenset({DownloadState.COMPLETE, DownloadState.FAILED, DownloadState.CANCELLED})


class DownloadHost(SwarmHost, Protocol):
    """What a download needs from the files provider."""

    def file_peers(self) -> list[Any]:
        """Connected peers that offer the files provider."""

    def ban(self, peer_id: Any, cid: str, reason: str) -> None:
        """Disconnect a peer that lied about this content."""

    def run_in_thread(self, function: Callable, *args: Any) -> defer.Deferred:
        """Blocking work off the reactor."""

    def open_partial(self, download: Download) -> Any:
        """Create (blocking) the partial download store for a download whose metadata is known."""

    def block_verified(self, download: Download, index: int) -> None:
        """A block was verified and written: tell interested peers."""

    def download_progress(self, download: Download) -> None:
        """Called every tick while the download runs (for progress events)."""

    def download_finished(self, download: Download) -> None:
        """The download completed (it is now a share) or failed or was cancelled."""

    def find_sources(self, cid: str) -> None:
        """Ask the source lookups for more peers with ``cid`` (and dial them)."""

    def connect_to(self, address: str) -> None:
        """Dial a peer learnt by peer exchange."""


class Download:
    """One content ID being fetched from the swarm."""

    def __init__(
        self,
        host: DownloadHost,
        cid: ContentID,
        destination: str,
        force: bool,
        partial: Any = None,
        leaves: list[bytes] | None = None,
    ) -> None:
        self.host = host
        self.cid = cid
        self.cid_text = str(cid)
        self.destination = destination
        self.force = force
        self.partial = partial
        self.manifest: Manifest | None = partial.manifest if partial is not None else None
        self.leaves: list[bytes] | None = leaves
        self.state = DownloadState.FINDING_SOURCES if partial is None else DownloadState.DOWNLOADING
        self.error = ""
        self.swarm = Swarm(host, self.cid_text)
        self.banned: dict[str, str] = {}
        self.meter = Meter(now=host.clock.seconds)
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.final_path: str | None = None
        self._metadata_from: Any = None
        self._ticker: Any = None
        self._dirty = False
        self._checkpointing = False
        self._last_checkpoint = 0.0
        self._writing = 0
        self._to_write: deque = deque()
        self._writer_busy = False
        self._finishing = False
        self._asked: set[Any] = set()
        self._last_lookup = 0.0
        self.bytes_verified = 0
        self.blocks_rejected = 0
        #: Which peer each block received in this run came from (the piece map).
        self.origins: dict[int, Any] = {}
        self.directory: str | None = None

    @property
    def sources(self) -> dict[Any, Source]:
        """The peers that have (some of) the content, by PeerID."""
        return self.swarm.sources

    @property
    def picker(self) -> BlockPicker | None:
        """The block picker, once the manifest is known."""
        return self.swarm.picker

    def final_destination(self) -> str:
        """Where the finished content goes: the given path, or the directory plus its name."""
        if self.destination:
            return self.destination
        assert self.manifest is not None
        return os.path.join(self.directory or os.getcwd(), self.manifest.name)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Ask every connected peer; keep ticking for timeouts and checkpoints."""
        if self.manifest is not None:
            self._make_picker()
        for peer_id in self.host.file_peers():
            self.ask(peer_id)
        self._look_for_sources()
        self._ticker = self.host.clock.callLater(TICK, self._tick)

    def _look_for_sources(self) -> None:
        self._last_lookup = self.host.clock.seconds()
        self.host.find_sources(self.cid_text)

    def ask(self, peer_id: Any) -> None:
        """Declare interest to a peer and ask it for other sources."""
        if self.finished or str(peer_id) in self.banned:
            return
        self._asked.add(peer_id)
        self.host.request(peer_id, {"t": "interest", "cid": self.cid_text})

    def cancel(self) -> None:
        """Stop; the caller deletes the partial data."""
        self._stop(DownloadState.CANCELLED)

    @property
    def finished(self) -> bool:
        """Complete, failed or cancelled."""
        return self.state in _FINISHED

    def _stop(self, state: DownloadState, error: str = "") -> None:
        if self.finished:
            return
        self.state = state
        self.error = error
        self.finished_at = time.time()
        if self._ticker is not None and self._ticker.active():
            self._ticker.cancel()
        self.swarm.close()
        self.host.download_finished(self)

    # -- messages from peers -------------------------------------------------------------

    def bitfield(self, peer_id: Any, bits: bytes) -> None:
        """A peer has (some of) the content."""
        if self.finished or str(peer_id) in self.banned:
            return
        self.swarm.bitfield(peer_id, bits)
        if self.swarm.picker is None and self._metadata_from is None:
            self._fetch_metadata(peer_id)

    def have(self, peer_id: Any, index: int) -> None:
        """
        A source verified another block.  A peer that had nothing when we
        declared interest (it answered ``none``) becomes a source now.
        """
        if self.finished or self.swarm.picker is None or index >= self.picker_count:
            return
        if peer_id not in self.swarm.sources:
            self.bitfield(peer_id, bytes(bitfield.size(self.picker_count)))
        self.swarm.have(peer_id, index)

    def not_available(self, peer_id: Any) -> None:
        """The peer does not have the content (or the metadata)."""
        if peer_id == self._metadata_from and self.manifest is None:
            self._metadata_from = None
            self.swarm.remove(peer_id)  # else it would be asked again, in a loop
            self._fetch_metadata_elsewhere()

    def manifest_received(self, peer_id: Any, body: bytes) -> None:
        """The manifest: it must hash to the content ID."""
        if self.manifest is not None or peer_id != self._metadata_from:
            return
        try:
            manifest = Manifest.decode(body)
        except ValueError as e:
            self._lied(peer_id, f"sent a malformed manifest ({e})")
            return
        if ContentID.for_manifest(manifest) != self.cid:
            self._lied(peer_id, "sent a manifest that does not match the content ID")
            return
        self._pending_manifest = manifest
        self.host.request(peer_id, {"t": "hashes?", "cid": self.cid_text})

    def hashes_received(self, peer_id: Any, body: bytes) -> None:
        """Every file's leaf hashes: each file's must rebuild its root."""
        manifest = getattr(self, "_pending_manifest", None)
        if self.manifest is not None or manifest is None or peer_id != self._metadata_from:
            return
        leaves = [body[i : i + 32] for i in range(0, len(body), 32)]
        if len(body) % 32 or len(leaves) != manifest.block_count:
            self._lied(peer_id, "sent leaf hashes of the wrong length")
            return
        start = 0
        for entry in manifest.files:
            if root_from_leaves(leaves[start : start + entry.block_count]) != entry.root:
                self._lied(peer_id, "sent leaf hashes that do not match the manifest")
                return
            start += entry.block_count
        self.manifest, self.leaves = manifest, leaves
        d = self.host.run_in_thread(self.host.open_partial, self)
        d.addCallbacks(self._partial_ready, self._partial_failed)

    def _partial_ready(self, partial: Any) -> None:
        if self.finished:
            return
        self.partial = partial
        self.state = DownloadState.DOWNLOADING
        self._make_picker()

    def _partial_failed(self, failure: Any) -> None:
        self._stop(DownloadState.FAILED, failure.getErrorMessage())

    def block_received(self, peer_id: Any, index: int, data: Sequence[bytes]) -> None:
        """
        A block, as the list of its pieces: verify and write it off the
        reactor, then account for it.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = (data,)
        size = sum(map(len, data))
        source = self.swarm.arrived(peer_id, index, size)
        if source is None:
            return
        assert self.leaves is not None
        self.meter.add(size)
        expected = self.leaves[index]
        length = self._block_length(index)
        self._writing += 1
        self._to_write.append((index, data, expected, length, peer_id))
        if not self._writer_busy:
            self._start_writer()
        self.swarm.fill(source)

    def _start_writer(self) -> None:
        """One worker call verifies and writes every block queued by then (fewer handoffs)."""
        self._writer_busy = True
        d = self.host.run_in_thread(_drain_writes, self.partial, self._to_write)
        d.addCallbacks(self._writes_done, self._write_failed)

    def _writes_done(self, results: list[tuple[int, Any, bool]]) -> None:
        self._writer_busy = False
        for index, peer_id, good in results:
            self._block_checked(good, peer_id, index)
        if self._to_write and not self.finished:
            self._start_writer()

    def _block_checked(self, good: bool, peer_id: Any, index: int) -> None:
        self._writing -= 1
        if self.finished or self.swarm.picker is None:
            return
        if not good:
            self.blocks_rejected += 1
            self.swarm.block_failed(index, peer_id)
            self._lied(peer_id, f"sent block {index}, which failed verification")
            return
        self.bytes_verified += self._block_length(index)
        self.origins[index] = peer_id
        self._dirty = True
        self.swarm.block_done(index, peer_id)
        self.host.block_verified(self, index)
        if self.swarm.complete:
            self._finish()
        else:
            self.swarm.fill_all()

    def _write_failed(self, failure: Any) -> None:
        self._writer_busy = False
        self._writing = 0
        self._to_write.clear()
        self._stop(DownloadState.FAILED, f"writing a block failed: {failure.getErrorMessage()}")

    def rejected(self, peer_id: Any, index: int, busy: bool = False) -> None:
        """The peer will not send a block: never (it lacks it) or not now (``busy``)."""
        self.swarm.rejected(peer_id, index, busy)

    def peer_gone(self, peer_id: Any) -> None:
        """A source disconnected: only its in-flight blocks are lost."""
        self._asked.discard(peer_id)
        self.swarm.remove(peer_id)
        if peer_id == self._metadata_from:
            self._metadata_from = None
            self._fetch_metadata_elsewhere()

    # -- internals ---------------------------------------------------------------------------

    @property
    def picker_count(self) -> int:
        """Blocks in the content."""
        return self.manifest.block_count if self.manifest is not None else 0

    def _make_picker(self) -> None:
        assert self.manifest is not None and self.partial is not None
        self.swarm.start_picking(self.manifest, set(self.partial.have))
        self.bytes_verified = sum(self._block_length(i) for i in self.partial.have)
        if self.swarm.complete:
            self._finish()
            return
        self.swarm.fill_all()

    def _fetch_metadata(self, peer_id: Any) -> None:
        self.state = DownloadState.FETCHING_METADATA
        self._metadata_from = peer_id
        self.host.request(peer_id, {"t": "manifest?", "cid": self.cid_text})

    def _fetch_metadata_elsewhere(self) -> None:
        if self.manifest is not None or self.finished:
            return
        for peer_id in self.swarm.sources:
            self._fetch_metadata(peer_id)
            return
        self.state = DownloadState.FINDING_SOURCES

    def _block_length(self, index: int) -> int:
        assert self.manifest is not None
        return self.manifest.locate(index)[3]

    def _lied(self, peer_id: Any, reason: str) -> None:
        log.warn(
            "banning peer {peer} for content {cid}: it {reason}",
            peer=peer_id,
            cid=self.cid_text,
            reason=reason,
        )
        self.banned[str(peer_id)] = reason
        self.peer_gone(peer_id)
        self.host.ban(peer_id, self.cid_text, reason)

    def _tick(self) -> None:
        """Timeouts, checkpoints, rate-limited retries, and asking new peers."""
        self._ticker = None
        if self.finished:
            return
        now = self.host.clock.seconds()
        self.swarm.tick(now)
        for peer_id in self.host.file_peers():
            if peer_id not in self._asked:
                self.ask(peer_id)
        lookup_every = LOOKUP_INTERVAL if self.swarm.sources else LOOKUP_INTERVAL / 2
        if len(self.swarm.sources) < WANTED_SOURCES and now - self._last_lookup >= lookup_every:
            self._look_for_sources()
        if self._dirty and now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
            self._checkpoint()
        self.host.download_progress(self)
        self._ticker = self.host.clock.callLater(TICK, self._tick)

    def _checkpoint(self) -> defer.Deferred:
        if self._checkpointing or self.partial is None:
            return defer.succeed(None)
        self._checkpointing = True
        self._dirty = False
        self._last_checkpoint = self.host.clock.seconds()
        d = self.host.run_in_thread(self.partial.checkpoint)

        def done(result: Any) -> Any:
            self._checkpointing = False
            return result

        return d.addBoth(done)

    def _finish(self) -> None:
        if self._finishing or self.finished:
            return
        self._finishing = True
        self.swarm.hold()
        self.state = DownloadState.FINISHING
        d = self._wait_for_writes()
        d.addCallback(lambda _: self.host.run_in_thread(self.partial.checkpoint))
        d.addCallback(lambda _: self.host.run_in_thread(self.partial.finalize))
        d.addCallbacks(
            self._finalized, lambda f: self._stop(DownloadState.FAILED, f.getErrorMessage())
        )

    def _wait_for_writes(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()

        def check() -> None:
            if self._writing == 0 and not self._checkpointing:
                d.callback(None)
            else:
                self.host.clock.callLater(0.01, check)

        check()
        return d

    def _finalized(self, path: Any) -> None:
        self.final_path = str(path)
        log.info("download of {cid} complete: {path}", cid=self.cid_text, path=self.final_path)
        self._stop(DownloadState.COMPLETE)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict:
        """A JSON-able progress report."""
        total = self.manifest.total_size if self.manifest is not None else None
        rate = self.meter.rate()
        remaining = (total - self.bytes_verified) if total is not None else None
        eta = remaining / rate if remaining is not None and rate > 0 else None
        return {
            "cid": self.cid_text,
            "name": self.manifest.name if self.manifest is not None else None,
            "state": self.state.value,
            "detail": _detail(self),
            "error": self.error or None,
            "destination": self.destination,
            "path": self.final_path,
            "size": total,
            "bytes_done": self.bytes_verified,
            "blocks_done": self.partial.have_count if self.partial is not None else 0,
            "blocks": self.picker_count or None,
            "rate": rate,
            "eta": eta,
            "peers": len(self.swarm.sources),
            "sources": {
                str(s.peer_id): {"in_flight": len(s.in_flight), "received": s.received}
                for s in self.swarm.sources.values()
            },
            "banned": dict(self.banned),
            "started": self.started_at,
            "finished": self.finished_at,
        }


def _detail(download: Download) -> str:
    if download.state is DownloadState.FINDING_SOURCES:
        return "no sources yet"
    if download.state is DownloadState.FAILED:
        return download.error
    return download.state.value


def _drain_writes(partial: Any, queue: deque, limit: int = 64) -> list[tuple[int, Any, bool]]:
    """In a worker thread: verify and write queued blocks, up to ``limit`` of them."""
    results = []
    while len(results) < limit:
        try:
            index, data, expected, length, peer_id = queue.popleft()
        except IndexError:
            break
        results.append((index, peer_id, _verify_and_write(partial, index, data, expected, length)))
    return results


def _verify_and_write(
    partial: Any, index: int, data: Sequence[bytes], expected: bytes, length: int
) -> bool:
    """In a worker thread: check the block (its pieces) against its leaf hash, then write it."""
    if sum(map(len, data)) != length or leaf_hash(data) != expected:
        return False
    partial.write_block(index, data)
    return True
