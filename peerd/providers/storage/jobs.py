"""
What every client verb (store, retrieve, verify, maintain) runs on: the
:class:`Job` the API shows while an operation runs, :class:`StorageFailed`,
and :class:`StorageClient`, this peer's handle on the storage providers of
connected peers (streams to them, who holds which shares), with the secrets
that name this client to each server.

Disk, crypto and zfec run in worker threads, segment by segment, with at
most :data:`PIPELINE` segments in flight, so memory does not grow with the
file.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from peerd.providers.storage.protocol import ClientStream

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
                answers[peer] = sorted(set(int_list(value.header["shares"])))[:255]
            else:
                answers[peer] = str(value.value) if not ok else "malformed answer"
        live = {p: s for p, s in streams.items() if not isinstance(s, Exception)}
        return live, answers


def int_list(value: object) -> list[int]:
    """The ints of a list a peer sent (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
