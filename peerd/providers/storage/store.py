"""
The client side: store, check, renew (this module) and retrieve, repair
(:mod:`.fetch`), run against the storage providers of connected peers.

Every long operation is a :class:`Job` whose ``status()`` the API shows
while it runs. Disk, crypto and zfec run in worker threads, segment by
segment, with a bounded number of segments in flight, so memory does not
grow with the file.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from twisted.internet import defer
from twisted.logger import Logger

from peerd.providers.storage.capability import Capability, check_encoding, storage_index
from peerd.providers.storage.codec import UEB, Layout, SegmentEncoder, share_root
from peerd.providers.storage.protocol import ClientStream, RemoteError, StreamGone
from peerd.providers.storage.share_files import overhead

NAME = "storage"
PIPELINE = 4
"""Segments in flight per operation."""
_job_ids = itertools.count(1)
log = Logger()


class StorageFailed(Exception):
    """An operation could not be done; the message says why and what was tried."""


def owner_secret(client_secret: bytes, server: Any) -> bytes:
    """What identifies this client to one server (never the same for two servers)."""
    return hmac.new(client_secret, b"owner:" + server.digest, hashlib.sha256).digest()


def owner_id(client_secret: bytes, server: Any) -> str:
    """The owner name a server sees: a hash of :func:`owner_secret`."""
    return hashlib.sha256(owner_secret(client_secret, server)).digest()[:16].hex()


def lease_secret(client_secret: bytes, si: bytes, server: Any) -> bytes:
    """The renew/cancel secret of our lease on ``si`` at ``server``."""
    return hmac.new(client_secret, b"lease:" + si + server.digest, hashlib.sha256).digest()


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


def ueb_length(layout: Layout) -> int:
    """The exact encoded length of a UEB of ``layout``."""
    return len(UEB(layout, (bytes(32),) * layout.n, bytes(32)).encode())


@dataclass(eq=False)
class Job:
    """One store / retrieve / repair, as the API shows it."""

    kind: str
    size: int = 0
    state: str = "running"
    bytes_done: int = 0
    detail: str = ""
    error: str | None = None
    result: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(next(_job_ids)))
    started: float = 0.0
    finished_at: float | None = None
    clock: Any = None
    done: defer.Deferred = field(default_factory=defer.Deferred)

    @property
    def finished(self) -> bool:
        """Complete or failed."""
        return self.state in ("complete", "failed")

    def status(self) -> dict:
        """The API shape."""
        now = self.finished_at if self.finished_at is not None else self.clock.seconds()
        elapsed = max(1e-9, now - self.started)
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "size": self.size,
            "bytes_done": self.bytes_done,
            "rate": self.bytes_done / elapsed,
            "elapsed": elapsed,
            "detail": self.detail,
            "error": self.error,
            "result": self.result,
        }

    def run(self, work: Callable[[Job], Any]) -> Job:
        """Run ``work(self)`` (a coroutine function) to the end."""
        self.started = self.clock.seconds()
        d = defer.Deferred.fromCoroutine(work(self))
        d.addCallbacks(self._complete, self._failed)
        return self

    def _complete(self, result: dict) -> None:
        self.state = "complete"
        self.result = result
        self.finished_at = self.clock.seconds()
        self.done.callback(self)

    def _failed(self, failure: Any) -> None:
        self.state = "failed"
        error = failure.value
        if isinstance(error, StorageFailed):
            self.error = str(error)
        else:
            self.error = f"{type(error).__name__}: {error}"
            log.failure("storage: {kind} job failed unexpectedly", failure, kind=self.kind)
        self.finished_at = self.clock.seconds()
        self.done.callback(self)


class StorageClient:
    """
    The client half of the storage provider.

    :param node: the :class:`~peerd.interfaces.INode`.
    :param client_secret: 32 bytes kept in the data dir, from which lease
        secrets are derived.
    """

    def __init__(
        self,
        node: Any,
        client_secret: bytes,
        *,
        segment_size: int,
        request_timeout: float,
    ) -> None:
        self.node = node
        self.clock = node.clock
        self.client_secret = client_secret
        self.segment_size = segment_size
        self.request_timeout = request_timeout

    def storage_peers(self) -> list[Any]:
        """PeerIDs of connected peers offering storage."""
        return [p.peer_id for p in self.node.connected_peers() if NAME in p.providers]

    async def open(self, peer: Any) -> ClientStream:
        """A new stream to ``peer``'s storage provider."""
        stream = ClientStream(self.clock, self.request_timeout)
        await self.node.open_stream(peer, {"v": 1}, stream)
        return stream

    async def open_all(self, peers: list[Any]) -> dict[Any, ClientStream | Exception]:
        """Streams to every peer at once; an exception in place of the ones that failed."""
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self.open(p)) for p in peers], consumeErrors=True
        )
        return {
            peer: value if ok else value.value
            for peer, (ok, value) in zip(peers, results, strict=True)
        }

    async def locate(self, si: bytes, peers: list[Any]) -> tuple[dict, dict]:
        """
        Ask every peer which shares of ``si`` it holds. Returns
        ``({peer: stream}, {peer: [shnums] or "error text"})``.
        """
        streams = await self.open_all(peers)
        answers: dict[Any, Any] = {}
        calls = []
        for peer, stream in streams.items():
            if isinstance(stream, Exception):
                answers[peer] = f"cannot open a stream: {stream}"
                continue
            calls.append((peer, stream.call({"t": "list", "si": si.hex()})))
        results = await defer.DeferredList([d for _, d in calls], consumeErrors=True)
        for (peer, _), (ok, value) in zip(calls, results, strict=True):
            if ok and isinstance(value.header.get("shares"), list):
                answers[peer] = sorted(set(_int_list(value.header["shares"])))[:255]
            else:
                answers[peer] = str(value.value) if not ok else "malformed answer"
        live = {p: s for p, s in streams.items() if not isinstance(s, Exception)}
        return live, answers

    # -- store ----------------------------------------------------------------------------------

    def store(self, path: str, k: int, n: int, lease_seconds: float, allow_doubling: bool) -> Job:
        """Start storing ``path``."""
        check_encoding(k, n)
        job = Job("store", clock=self.clock)
        return job.run(lambda j: self._store(j, path, k, n, lease_seconds, allow_doubling))

    async def _store(
        self, job: Job, path: str, k: int, n: int, lease_seconds: float, allow_doubling: bool
    ) -> dict:
        f: BinaryIO = await self.node.run_in_thread(open, path, "rb")
        try:
            size = await self.node.run_in_thread(lambda: os.fstat(f.fileno()).st_size)
            job.size = size
            layout = Layout(size, k, n, self.segment_size)
            key = os.urandom(32)
            si = storage_index(key)
            peers = self.storage_peers()
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
            share_size = layout.blocks_size() + overhead(layout.segments, ueb_length(layout))
            upload = _Upload(self, si, layout, share_size, lease_seconds, allow_doubling)
            try:
                await upload.place(list(range(n)), permuted(peers, si))
                job.detail = "uploading"
                encoder = SegmentEncoder(key, layout)
                for seg in range(layout.segments):
                    length = layout.plain_length(seg)
                    blocks = await self.node.run_in_thread(_read_encode, f, encoder, length)
                    await upload.send(seg, blocks)
                    job.bytes_done += length
                await upload.drain()
                ueb = encoder.finish()
                cap = Capability(key, ueb.hash(), k, n, size)
                job.detail = "closing shares"
                ueb_bytes = ueb.encode()
                await upload.close(
                    ueb_bytes, {sh: b"".join(h) for sh, h in enumerate(encoder.hashes)}
                )
            finally:
                upload.end()
        finally:
            await self.node.run_in_thread(f.close)
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

    # -- check and renew ----------------------------------------------------------------------

    async def check(self, cap: Capability, verify: bool = False) -> dict:
        """Who holds which share, is each sound, is the data retrievable."""
        from peerd.providers.storage.retrieve import verify_share

        peers = self.storage_peers()
        streams, answers = await self.locate(cap.storage_index, peers)
        shares = []
        try:
            for peer, held in answers.items():
                if not isinstance(held, list):
                    continue
                for sh in held:
                    status, why = await verify_share(self, streams[peer], cap, sh, verify)
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
            "peers": {
                str(p): a if isinstance(a, list) else {"error": a} for p, a in answers.items()
            },
        }

    async def renew(self, cap: Capability, lease_seconds: float) -> dict:
        """Extend our lease on every server holding shares of ``cap``."""
        si = cap.storage_index
        streams, answers = await self.locate(si, self.storage_peers())
        results = {}
        try:
            for peer, held in answers.items():
                if not isinstance(held, list) or not held:
                    continue
                secret = lease_secret(self.client_secret, si, peer)
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


def _int_list(value: object) -> list[int]:
    """The ints of a list a peer sent (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]


def _read_encode(f: BinaryIO, encoder: SegmentEncoder, length: int) -> list[bytes]:
    """In a worker thread: read one segment and encode it."""
    data = f.read(length)
    if len(data) != length:
        raise StorageFailed("the file changed size while it was being stored")
    return encoder.encode(data)


class _Upload:
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
        for sh in _int_list(answer.header.get("new")):
            if sh in shnums:
                self.writers[sh] = (peer, stream)
                taken.append(sh)
        for sh in _int_list(answer.header.get("have")):
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
