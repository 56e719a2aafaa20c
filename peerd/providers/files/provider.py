"""
:class:`FilesProvider`: share files and swarm-download them from many
peers at once.  Glue between the streams (:mod:`.protocol`), the share index
(:mod:`.upload.share_index`), downloads (:mod:`.download.download`,
:mod:`.download.partial`) and the upload scheduler (:mod:`.upload.scheduler`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from peerd.disk import write_atomically
from peerd.interfaces import (
    INode,
    IPeerInfo,
    IPeerObserver,
    IResourceProvider,
    ISourceLookup,
    IStream,
)
from peerd.providers.files import bitfield
from peerd.providers.files.content import ContentID
from peerd.providers.files.download.download import Download, DownloadState
from peerd.providers.files.download.lookup import PeerExchangeLookup
from peerd.providers.files.download.partial import PartialDownload
from peerd.providers.files.merkle import MerkleTree
from peerd.providers.files.protocol import RequestingStream, ServingStream
from peerd.providers.files.shapes import event_status, share_dict
from peerd.providers.files.upload.scheduler import BUSY, UploadScheduler
from peerd.providers.files.upload.share_index import ShareIndex
from peerd.providers.files.upload.trust import BlockTrust
from peerd.ratelimit import Meter, RateLimiter
from peerd.wire.records import Record

NAME = "files"
PROGRESS_INTERVAL = 1.0


class Busy(Exception):
    """A block cannot be served right now, but may be later."""


@implementer(IResourceProvider, IPeerObserver)
class FilesProvider:
    """The files provider of one peer."""

    name = NAME

    def __init__(self, node: INode, config: dict) -> None:
        self.node = node
        self.config = config
        self.clock = node.clock
        self.log = node.log
        self.rng = random.Random()
        trust = None if config["verify_every_upload"] else BlockTrust()
        self.shares = ShareIndex(node.data_dir, trust=trust)
        self.downloads: dict[str, Download] = {}
        now = self.clock.seconds
        self.upload_limiter = RateLimiter(
            config["upload_rate"], config["peer_upload_rate"], now=now
        )
        self.download_limiter = RateLimiter(
            config["download_rate"], config["peer_download_rate"], now=now
        )
        self.scheduler = UploadScheduler(
            clock=self.clock,
            limiter=self.upload_limiter,
            read_blocks=self._read_blocks,
            slots=config["upload_slots"],
        )
        self.upload_meter = Meter(now=now)
        self._outgoing: dict[Any, RequestingStream] = {}
        self._serving: set[ServingStream] = set()
        self._trees: dict[tuple[str, int], MerkleTree] = {}
        self.lookups: list[ISourceLookup] = [PeerExchangeLookup(self)]
        self.uploaded_to: dict[str, int] = {}
        self.bans: dict[str, dict[str, str]] = {}
        self.blocks_verified = 0
        self._progress_sent: dict[str, tuple[float, str, int]] = {}

    # -- IResourceProvider ---------------------------------------------------------------

    async def start(self) -> None:
        """Load shares, resume downloads in progress, mount the API."""
        from peerd.providers.files.api import install_routes

        records = await self.node.run_in_thread(self.shares.load)
        partials = await self.node.run_in_thread(PartialDownload.resume_all, self.node.data_dir)
        for partial in partials:
            leaves = await self.node.run_in_thread(_read_leaves, partial)
            if leaves is None:
                continue
            download = Download(
                self, partial.cid, str(partial.destination), partial.force, partial, leaves
            )
            self.downloads[str(partial.cid)] = download
            download.start()
        self.node.add_peer_observer(self)
        install_routes(self.node.control, self)
        self.log.info(
            "files: {shares} shares, {downloads} downloads resumed",
            shares=len(records),
            downloads=len(partials),
        )

    async def stop(self) -> None:
        """Checkpoint downloads so a restart resumes them."""
        self.node.remove_peer_observer(self)
        for download in self.downloads.values():
            if download.partial is not None and not download.finished:
                await self.node.run_in_thread(download.partial.checkpoint)

    def stream_opened(self, stream: IStream) -> None:
        """A peer opened its requesting stream to us."""
        serving = ServingStream(self, stream.peer.peer_id)
        self._serving.add(serving)
        stream.attach(serving)

    def status(self) -> dict:
        """Summary for ``peerctl status``."""
        return {
            "shares": len(self.shares.all()),
            "downloads": sum(1 for d in self.downloads.values() if not d.finished),
            "uploading_to": self.scheduler.peers_served,
            "upload_rate": self.upload_meter.rate(),
            "bytes_uploaded": self.scheduler.bytes_sent,
            "download_rate": sum(d.meter.rate() for d in self.downloads.values() if not d.finished),
            "blocks_verified": self.blocks_verified,
            "blocks_rejected": sum(d.blocks_rejected for d in self.downloads.values()),
        }

    # -- IPeerObserver ------------------------------------------------------------------

    def peer_connected(self, peer: IPeerInfo) -> None:
        """Ask a new peer about every active download."""
        if NAME not in peer.providers:
            return
        for download in self.downloads.values():
            if not download.finished:
                download.ask(peer.peer_id)

    def peer_disconnected(self, peer: IPeerInfo, reason: str) -> None:
        """Drop the peer from every download (its streams are gone too)."""
        self._outgoing.pop(peer.peer_id, None)
        self.upload_limiter.forget(peer.peer_id)
        self.download_limiter.forget(peer.peer_id)
        for download in self.downloads.values():
            download.peer_gone(peer.peer_id)

    # -- DownloadHost -------------------------------------------------------------------

    def request(self, peer_id: Any, header: dict) -> None:
        """Send a request on our stream to ``peer_id``, opening it if needed."""
        stream = self._outgoing.get(peer_id)
        if stream is None or stream.lost:
            stream = RequestingStream(self, peer_id)
            self._outgoing[peer_id] = stream
            d = self.node.open_stream(peer_id, {"v": 1}, stream)
            d.addErrback(self._open_failed, peer_id, stream)
            if stream.lost or self._outgoing.get(peer_id) is not stream:
                return
        stream.request(header)

    def _open_failed(self, failure: Any, peer_id: Any, stream: RequestingStream) -> None:
        stream.lost = True
        if self._outgoing.get(peer_id) is stream:
            del self._outgoing[peer_id]
        for download in self.downloads.values():
            download.peer_gone(peer_id)

    def file_peers(self) -> list[Any]:
        """Connected peers offering the files provider."""
        return [p.peer_id for p in self.node.connected_peers() if NAME in p.providers]

    def ban(self, peer_id: Any, cid: str, reason: str) -> None:
        """Banned for this content and disconnected."""
        self.bans.setdefault(cid, {})[str(peer_id)] = reason
        self.node.emit("peer.banned", peer=str(peer_id), cid=cid, reason=reason)
        self.node.disconnect(peer_id, f"files: {reason}")

    def download_limit(self, peer_id: Any, length: int) -> float:
        """Seconds until ``length`` bytes may be requested from ``peer_id``."""
        return self.download_limiter.delay(peer_id, length)

    def download_consumed(self, peer_id: Any, length: int) -> None:
        """Account a request against the download limits."""
        self.download_limiter.consume(peer_id, length)

    def run_in_thread(self, function: Any, *args: Any) -> defer.Deferred:
        """Blocking work on the node's worker pool."""
        return self.node.run_in_thread(function, *args)

    def open_partial(self, download: Download) -> PartialDownload:
        """In a worker thread: create the partial store and record the leaf hashes."""
        assert download.manifest is not None and download.leaves is not None
        partial = PartialDownload(
            self.node.data_dir,
            download.cid,
            download.manifest,
            download.final_destination(),
            download.force,
        )
        _write_leaves(partial, download.leaves)
        return partial

    def block_verified(self, download: Download, index: int) -> None:
        """Tell interested peers we have another block."""
        self.blocks_verified += 1
        for stream in self._serving:
            if download.cid_text in stream.interests:
                stream.send_have(download.cid_text, index)

    def download_progress(self, download: Download) -> None:
        """A ``download.progress`` event when it moved, at most one a second per download."""
        sent = self._progress_sent.get(download.cid_text)
        now = self.clock.seconds()
        moved = (download.state, download.bytes_verified)
        if sent is not None and (sent[1:] == moved or now - sent[0] < PROGRESS_INTERVAL):
            return
        self._progress_sent[download.cid_text] = (now, *moved)
        self.node.emit("download.progress", cid=download.cid_text, download=event_status(download))

    def download_finished(self, download: Download) -> None:
        """A complete download becomes a share; a cancelled one leaves nothing behind."""
        self._progress_sent.pop(download.cid_text, None)
        outcome = "completed" if download.state is DownloadState.COMPLETE else download.state.value
        self.node.emit(
            f"download.{outcome}", cid=download.cid_text, download=event_status(download)
        )
        if download.state is DownloadState.COMPLETE and download.final_path is not None:
            assert download.manifest is not None and download.leaves is not None
            d = self.run_in_thread(
                self.shares.adopt, download.final_path, download.manifest, _per_file(download)
            )
            d.addErrback(lambda f: self.log.failure("sharing the completed download", f))
        elif download.state is DownloadState.CANCELLED and download.partial is not None:
            self.run_in_thread(download.partial.cancel)

    def find_sources(self, cid: str) -> None:
        """Ask every source lookup for peers holding ``cid`` and dial what they find."""
        for lookup in self.lookups:
            lookup.find_sources(cid).addCallback(self._dial_found)

    def _dial_found(self, addresses: list[str]) -> None:
        for address in addresses[:16]:
            self.connect_to(address)

    def connect_to(self, address: str) -> None:
        """Dial a peer learnt by peer exchange (errors are expected and quiet)."""
        self.node.connect(address).addErrback(lambda _: None)

    # -- FilesHost (serving side) ----------------------------------------------------------

    def describe(self, cid: str) -> tuple[bytes, int] | None:
        """Our bitfield of ``cid``."""
        record = self.shares.get(cid)
        if record is not None:
            count = record.manifest.block_count
            changed = {
                i for f in record.changed for i in record.manifest.file_blocks(f)
            }  # blocks of files changed on disk are not offered
            return bitfield.pack((i for i in range(count) if i not in changed), count), count
        download = self.downloads.get(cid)
        if download is not None and download.partial is not None and download.manifest is not None:
            count = download.manifest.block_count
            return bitfield.pack(download.partial.have, count), count
        return None

    def manifest_bytes(self, cid: str) -> bytes | None:
        """The encoded manifest of content we hold."""
        record = self.shares.get(cid)
        if record is not None:
            return record.manifest.encode()
        download = self.downloads.get(cid)
        if download is not None and download.partial is not None and download.manifest is not None:
            return download.manifest.encode()
        return None

    def leaves_bytes(self, cid: str) -> bytes | None:
        """Every file's leaf hashes, concatenated."""
        record = self.shares.get(cid)
        if record is not None:
            return b"".join(leaf for leaves in record.leaves for leaf in leaves)
        download = self.downloads.get(cid)
        if download is not None and download.partial is not None and download.leaves is not None:
            return b"".join(download.leaves)
        return None

    def pex_addresses(self, cid: str, exclude: Any) -> list[str]:
        """
        Addresses of other peers: first those known to hold or want ``cid``,
        then our other files peers (which the asker can query itself), 32 at most.
        """
        known = {s.peer_id for s in self._serving if cid in s.interests}
        download = self.downloads.get(cid)
        if download is not None:
            known.update(download.sources)
        others = [p for p in self.file_peers() if p not in known]
        addresses: list[str] = []
        for peer_id in [*known, *others]:
            info = self.node.peer(peer_id)
            if peer_id != exclude and info is not None:
                addresses.extend(info.listen_addresses[:2])
        return addresses[:32]

    def interest_changed(self, stream: ServingStream) -> None:
        """Nothing to do: HAVE pushes look at each stream's interests."""

    def response_received(self, peer_id: Any, record: Record) -> None:
        """Route an answer to the download it is for."""
        download = self.downloads.get(record.header.get("cid"))  # type: ignore[arg-type]
        if download is None or download.finished:
            return
        kind = record.type
        index = record.header.get("i")
        if kind == "block" and isinstance(index, int):
            download.block_received(peer_id, index, record.parts)
        elif kind == "have" and isinstance(index, int):
            download.have(peer_id, index)
        elif kind == "bitfield":
            download.bitfield(peer_id, record.body)
        elif kind == "none":
            download.not_available(peer_id)
        elif kind == "manifest":
            download.manifest_received(peer_id, record.body)
        elif kind == "hashes":
            download.hashes_received(peer_id, record.body)
        elif kind == "reject" and isinstance(index, int):
            download.rejected(peer_id, index, record.header.get("why") == BUSY)
        elif kind == "pex" and isinstance(record.header.get("peers"), list):
            for lookup in self.lookups:
                if isinstance(lookup, PeerExchangeLookup):
                    lookup.answer(download.cid_text, record.header["peers"])

    def requesting_stream_lost(self, peer_id: Any, stream: RequestingStream) -> None:
        """Our stream to a peer ended: its in-flight requests are lost."""
        if self._outgoing.get(peer_id) is stream:
            del self._outgoing[peer_id]
            for download in self.downloads.values():
                download.peer_gone(peer_id)

    def serving_stream_lost(self, stream: ServingStream) -> None:
        """A peer's stream to us ended."""
        self._serving.discard(stream)
        self.scheduler.forget(stream)

    # -- block reads for the scheduler --------------------------------------------------------

    def _read_blocks(self, requests: list[tuple[str, int]]) -> defer.Deferred:
        """
        Read (and verify) blocks for the upload scheduler in one worker
        handoff: from shared files, or from downloads in progress (which
        add the proof here, from the leaf hashes they hold).
        """
        results: list[Any] = [None] * len(requests)
        jobs: list[tuple[int, Callable[[], Any]]] = []
        partial_reads: dict[int, Download] = {}
        for i, (cid, index) in enumerate(requests):
            if self.shares.get(cid) is not None:
                jobs.append((i, functools.partial(self.shares.read_block, cid, index)))
                continue
            download = self.downloads.get(cid)
            held = (
                download is not None
                and download.partial is not None
                and 0 <= index < download.partial.manifest.block_count
                and download.partial.has(index)
            )
            if not held:
                continue  # None: not available
            assert download is not None and download.partial is not None
            if download.state is not DownloadState.DOWNLOADING:
                results[i] = Busy("the download is being finalized")
                continue
            jobs.append((i, functools.partial(download.partial.read_block, index)))
            partial_reads[i] = download
        if not jobs:
            return defer.succeed(results)

        def finish(done: list[tuple[int, Any]]) -> list[Any]:
            for i, result in done:
                download = partial_reads.get(i)
                if download is not None and isinstance(result, bytes):
                    result = (result, self._proof(download, requests[i][1]))
                elif download is not None and not isinstance(result, BaseException):
                    result = None
                if isinstance(result, tuple):
                    self.upload_meter.add(len(result[0]))
                results[i] = result
            return results

        return self.run_in_thread(_run_each, jobs).addCallback(finish)

    def _proof(self, download: Download, index: int) -> list[bytes]:
        assert download.manifest is not None and download.leaves is not None
        location = download.manifest.locate(index)
        key = (download.cid_text, location.file_index)
        tree = self._trees.get(key)
        if tree is None:
            blocks = download.manifest.file_blocks(location.file_index)
            tree = self._trees[key] = MerkleTree(download.leaves[blocks.start : blocks.stop])
        return tree.proof(location.block_in_file)

    # -- API operations ---------------------------------------------------------------------------

    async def share(self, path: str) -> dict:
        """Hash (off the reactor) and share ``path``."""
        record = await self.run_in_thread(self.shares.add, path)
        for stream in self._serving:
            if str(record.cid) in stream.interests:
                count = record.manifest.block_count
                stream.send(
                    {"t": "bitfield", "cid": str(record.cid), "n": count},
                    bitfield.pack(range(count), count),
                )
        shared = share_dict(record)
        self.node.emit("share.added", cid=shared["cid"], name=shared["name"], size=shared["size"])
        return shared

    def get(
        self, cid: ContentID, destination: str | None, directory: str | None, force: bool
    ) -> Download:
        """Start (or return) the download of ``cid``."""
        existing = self.downloads.get(str(cid))
        if existing is not None and not existing.finished:
            return existing
        download = Download(self, cid, destination or "", force)
        download.directory = directory
        self.downloads[str(cid)] = download
        download.start()
        self.node.emit("download.started", cid=str(cid), download=event_status(download))
        return download

    def cancel(self, cid: str) -> bool:
        """Cancel a download in progress."""
        download = self.downloads.get(cid)
        if download is None or download.finished:
            return False
        download.cancel()
        return True


def _per_file(download: Download) -> list[list[bytes]]:
    assert download.manifest is not None and download.leaves is not None
    out = []
    for i in range(len(download.manifest.files)):
        blocks = download.manifest.file_blocks(i)
        out.append(download.leaves[blocks.start : blocks.stop])
    return out


def _write_leaves(partial: PartialDownload, leaves: list[bytes]) -> None:
    write_atomically(partial.directory / "leaves", b"".join(leaves), replace=True)


def _read_leaves(partial: PartialDownload) -> list[bytes] | None:
    try:
        blob = (partial.directory / "leaves").read_bytes()
    except OSError:
        return None
    leaves = [blob[i : i + 32] for i in range(0, len(blob), 32)]
    return leaves if len(leaves) == partial.manifest.block_count else None


def _run_each(jobs: list[tuple[int, Callable[[], Any]]]) -> list[tuple[int, Any]]:
    """In a worker thread: run each job, keeping its result or the exception it raised."""
    done: list[tuple[int, Any]] = []
    for i, job in jobs:
        try:
            done.append((i, job()))
        except Exception as e:
            done.append((i, e))
    return done


__all__ = ["FilesProvider"]
