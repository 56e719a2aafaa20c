"""
The upload scheduler: serves block requests from many peers fairly, within
the upload rate limits, with a bounded number of disk reads in flight.

Fairness is by upload slots with rotation: at most ``slots`` peers are
served at once, round robin one block each; when others wait, the peer that
has held a slot longest yields it every ``rotation`` seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

BUSY = "too many queued requests"


class Requester(Protocol):
    """The serving side of one peer's stream, as the scheduler sees it."""

    peer_key: object
    congested: bool

    def send_block(self, cid: str, index: int, data: bytes, proof: list[bytes] | None) -> None:
        """Send a block."""

    def send_reject(self, cid: str, index: int, why: str) -> None:
        """Tell the peer a request cannot be served."""


@dataclass(eq=False)
class _Queue:
    requester: Requester
    requests: deque = field(default_factory=deque)
    since: float = 0.0


class UploadScheduler:
    """
    :param read_blocks: ``read_blocks([(cid, index), ...]) -> Deferred[list]``
        reads and verifies blocks off the reactor thread, in one handoff; for
        each request in order, ``(data, proof)``, None (we cannot serve it), or
        the exception that reading it raised.
    :param block_length: ``block_length(cid, index) -> int | None`` for rate accounting.
    :param limiter: a :class:`~peerd.providers.files.ratelimit.RateLimiter` keyed by peer.
    """

    def __init__(
        self,
        *,
        clock: Any,
        limiter: Any,
        read_blocks: Callable[[list[tuple[str, int]]], defer.Deferred],
        block_length: Callable[[str, int], int | None],
        slots: int = 8,
        rotation: float = 10.0,
        max_reads: int = 8,
        max_queued_per_peer: int = 256,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self._read_blocks = read_blocks
        self._block_length = block_length
        self.slots = slots
        self.rotation = rotation
        self.max_reads = max_reads
        self.max_queued_per_peer = max_queued_per_peer
        self._queues: dict[Requester, _Queue] = {}
        self._active: deque[_Queue] = deque()
        self._waiting: deque[_Queue] = deque()
        self._reads = 0
        self._wakeup: Any = None
        self._rotate_call: Any = None
        self.bytes_sent = 0
        self.blocks_sent = 0

    # -- requests ----------------------------------------------------------------

    def request(self, requester: Requester, cid: str, index: int, want_proof: bool) -> None:
        """Queue a request from ``requester``."""
        queue = self._queues.get(requester)
        if queue is None:
            queue = self._queues[requester] = _Queue(requester)
        if queue not in self._active and queue not in self._waiting:
            self._waiting.append(queue)
        if len(queue.requests) >= self.max_queued_per_peer:
            requester.send_reject(cid, index, BUSY)
            return
        queue.requests.append((cid, index, want_proof))
        self._fill_slots()
        self.pump()

    def cancel(self, requester: Requester, cid: str, index: int) -> None:
        """Drop a queued request (one already being read still goes out)."""
        queue = self._queues.get(requester)
        if queue is not None:
            queue.requests = deque(r for r in queue.requests if r[:2] != (cid, index))

    def forget(self, requester: Requester) -> None:
        """The requester's stream is gone."""
        queue = self._queues.pop(requester, None)
        if queue is not None:
            for line in (self._active, self._waiting):
                if queue in line:
                    line.remove(queue)
            self._fill_slots()
            self.pump()

    @property
    def peers_served(self) -> int:
        """Peers holding an upload slot."""
        return len(self._active)

    @property
    def peers_waiting(self) -> int:
        """Peers waiting for a slot."""
        return len(self._waiting)

    # -- serving ------------------------------------------------------------------

    def pump(self) -> None:
        """Serve as much as slots, rate limits, congestion and read bounds allow."""
        if self._wakeup is not None and self._wakeup.active():
            return
        self._wakeup = None
        tried = 0
        delay = None
        batch: list[tuple[Requester, str, int, bool]] = []
        while (
            self._reads + len(batch) < self.max_reads and self._active and tried < len(self._active)
        ):
            queue = self._active[0]
            self._active.rotate(-1)
            requester = queue.requester
            if not queue.requests or requester.congested:
                tried += 1
                if not queue.requests:
                    self._release(queue)
                continue
            cid, index, want_proof = queue.requests[0]
            length = self._block_length(cid, index) or 0
            # Send once the buckets are out of debt and charge the whole block (debt
            # allowed): credit earned while a late timer waits is not lost.
            wait = self.limiter.delay(requester.peer_key, 1)
            if wait > 0:
                delay = wait if delay is None else min(delay, wait)
                tried += 1
                continue
            tried = 0
            queue.requests.popleft()
            self.limiter.consume(requester.peer_key, length)
            batch.append((requester, cid, index, want_proof))
        if batch:
            # one worker handoff for every read this round
            self._reads += len(batch)
            d = self._read_blocks([(cid, index) for _r, cid, index, _p in batch])
            d.addCallbacks(self._reads_done, self._reads_failed, (batch,), None, (batch,))
        if delay is not None and self._wakeup is None:
            self._wakeup = self.clock.callLater(delay, self.pump)

    def _reads_done(self, results: list, batch: list[tuple[Requester, str, int, bool]]) -> None:
        self._reads -= len(batch)
        for (requester, cid, index, want_proof), result in zip(batch, results, strict=True):
            if requester not in self._queues:
                continue
            if isinstance(result, BaseException):
                self._read_error(result, requester, cid, index)
            elif result is None:
                requester.send_reject(cid, index, "block not available")
            else:
                data, proof = result
                requester.send_block(cid, index, data, proof if want_proof else None)
                self.bytes_sent += len(data)
                self.blocks_sent += 1
        self.pump()

    def _reads_failed(self, failure: Any, batch: list[tuple[Requester, str, int, bool]]) -> None:
        self._reads -= len(batch)
        for requester, cid, index, _want_proof in batch:
            if requester in self._queues:
                self._read_error(failure.value, requester, cid, index)
        self.pump()

    def _read_error(self, error: BaseException, requester: Requester, cid: str, index: int) -> None:
        if type(error).__name__ == "Busy":
            why = BUSY  # the requester may ask again later
        else:
            why = "read error"
            log.failure(
                "reading block {index} of {cid} failed", Failure(error), index=index, cid=cid
            )
        requester.send_reject(cid, index, why)

    # -- slots ----------------------------------------------------------------------

    def _fill_slots(self) -> None:
        while self._waiting and len(self._active) < self.slots:
            queue = self._waiting.popleft()
            queue.since = self.clock.seconds()
            self._active.append(queue)
        if self._waiting and (self._rotate_call is None or not self._rotate_call.active()):
            self._rotate_call = self.clock.callLater(self.rotation, self._rotate)

    def _release(self, queue: _Queue) -> None:
        """A peer with nothing queued gives up its slot (it keeps its queue until forgotten)."""
        if queue in self._active:
            self._active.remove(queue)
        self._fill_slots()

    def _rotate(self) -> None:
        """Optimistic rotation: the longest-served peer yields its slot to a waiting one."""
        if not self._waiting or not self._active:
            return
        longest = min(self._active, key=lambda q: q.since)
        self._active.remove(longest)
        self._waiting.append(longest)
        self._fill_slots()
        self.pump()
