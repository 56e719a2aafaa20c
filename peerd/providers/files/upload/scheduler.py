"""
The upload scheduler: serves block requests from many peers fairly, within
the upload rate limits, with a bounded number of disk reads in flight.

Fairness is by upload slots with rotation: at most ``slots`` peers are
served at once, round robin one block each; when others wait, the peer that
has held a slot longest yields it every ``rotation`` seconds.

Under an upload limit a block is not sent in one go: its record header goes
first, then its body in slices of 1/20 s of the limit's traffic (16 KiB to
1 MiB), each charged to the token buckets when it leaves. So a limit holds
to within a slice, not a block, whatever the block size (up to 8 MiB).
Without limits, whole blocks go out at once.
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

SLICE_SECONDS = 0.05
"""A slice of a block body sent (and charged) at once under an upload limit: this
many seconds of traffic at the lowest limit that applies..."""
MIN_SLICE, MAX_SLICE = 16 * 1024, 1024 * 1024
"""...but no less than MIN_SLICE bytes and no more than MAX_SLICE."""

PACED_BLOCKS_PER_PEER = 2
"""Blocks being read or sent to one peer at a time under an upload limit."""


class Requester(Protocol):
    """The serving side of one peer's stream, as the scheduler sees it."""

    peer_key: object
    congested: bool

    def send_block(self, cid: str, index: int, data: bytes, proof: list[bytes] | None) -> None:
        """Send a block."""

    def start_block(self, cid: str, index: int, length: int, proof: list[bytes] | None) -> None:
        """Send a block's header; its ``length`` body bytes follow in ``send_block_part``."""

    def send_block_part(self, data: bytes | memoryview) -> None:
        """Send the next part of the body started with ``start_block``."""

    def send_reject(self, cid: str, index: int, why: str) -> None:
        """Tell the peer a request cannot be served."""


@dataclass(eq=False)
class _Queue:
    requester: Requester
    requests: deque = field(default_factory=deque)
    since: float = 0.0
    #: blocks read or being read and not yet sent (paced mode only)
    in_progress: int = 0
    #: blocks read, being sent slice by slice: [cid, index, data, proof, offset or None]
    sending: deque = field(default_factory=deque)


class UploadScheduler:
    """
    :param read_blocks: ``read_blocks([(cid, index), ...]) -> Deferred[list]``
        reads and verifies blocks off the reactor thread, in one handoff; for
        each request in order, ``(data, proof)``, None (we cannot serve it), or
        the exception that reading it raised.
    :param limiter: a :class:`~peerd.ratelimit.RateLimiter` keyed by peer.
    """

    def __init__(
        self,
        *,
        clock: Any,
        limiter: Any,
        read_blocks: Callable[[list[tuple[str, int]]], defer.Deferred],
        slots: int = 8,
        rotation: float = 10.0,
        max_reads: int = 8,
        max_queued_per_peer: int = 256,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self._read_blocks = read_blocks
        self.slots = slots
        self.rotation = rotation
        self.max_reads = max_reads
        self.max_queued_per_peer = max_queued_per_peer
        self._queues: dict[Requester, _Queue] = {}
        self._active: deque[_Queue] = deque()
        self._waiting: deque[_Queue] = deque()
        self._reads = 0
        self._wakeup: Any = None
        self._sending: deque[_Queue] = deque()  # peers with read blocks being paced out
        self._pace_call: Any = None
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
            queue.sending.clear()
            if queue in self._sending:
                self._sending.remove(queue)
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
        paced = self.paced
        batch: list[tuple[Requester, str, int, bool]] = []
        while (
            self._reads + len(batch) < self.max_reads and self._active and tried < len(self._active)
        ):
            queue = self._active[0]
            self._active.rotate(-1)
            requester = queue.requester
            busy = paced and queue.in_progress >= PACED_BLOCKS_PER_PEER
            if not queue.requests or requester.congested or busy:
                tried += 1
                if not queue.requests and not queue.in_progress:
                    self._release(queue)
                continue
            cid, index, want_proof = queue.requests[0]
            # Read once the buckets are out of debt; the bytes are charged as
            # they leave (_pace), so credit earned meanwhile is not lost.
            wait = self.limiter.delay(requester.peer_key, 1)
            if wait > 0:
                delay = wait if delay is None else min(delay, wait)
                tried += 1
                continue
            tried = 0
            queue.requests.popleft()
            if paced:
                queue.in_progress += 1
            batch.append((requester, cid, index, want_proof))
        if batch:
            # one worker handoff for every read this round
            self._reads += len(batch)
            d = self._read_blocks([(cid, index) for _r, cid, index, _p in batch])
            d.addCallbacks(
                self._reads_done, self._reads_failed, (batch, paced), None, (batch, paced)
            )
        if delay is not None and self._wakeup is None:
            self._wakeup = self.clock.callLater(delay, self.pump)

    def _reads_done(
        self, results: list, batch: list[tuple[Requester, str, int, bool]], paced: bool
    ) -> None:
        self._reads -= len(batch)
        for (requester, cid, index, want_proof), result in zip(batch, results, strict=True):
            queue = self._queues.get(requester)
            if queue is None:
                continue
            if isinstance(result, BaseException) or result is None:
                if paced:
                    queue.in_progress -= 1
                if result is None:
                    requester.send_reject(cid, index, "block not available")
                else:
                    self._read_error(result, requester, cid, index)
                continue
            data, proof = result
            if paced:
                queue.sending.append([cid, index, data, proof if want_proof else None, None])
                if queue not in self._sending:
                    self._sending.append(queue)
                self._pace()
            else:
                requester.send_block(cid, index, data, proof if want_proof else None)
                self.bytes_sent += len(data)
                self.blocks_sent += 1
        self.pump()

    @property
    def paced(self) -> bool:
        """Whether an upload limit is set, so blocks go out slice by slice."""
        return bool(self.limiter.rate or self.limiter.per_key_rate)

    def _pace(self) -> None:
        """
        Send read blocks slice by slice, one slice per peer in turn (so peers
        share the global bucket fairly), each when the buckets allow it.
        """
        if self._pace_call is not None and self._pace_call.active():
            return  # the timer already set goes on from here
        self._pace_call = None
        line = self._sending
        finished = False
        wait_min: float | None = None
        stalled = 0
        while line and stalled < len(line):
            queue = line[0]
            line.rotate(-1)
            requester = queue.requester
            if self._queues.get(requester) is not queue or not queue.sending:
                line.remove(queue)
                continue
            wait = self.limiter.delay(requester.peer_key, 1)
            if wait > 0:
                wait_min = wait if wait_min is None else min(wait_min, wait)
                stalled += 1
                continue
            stalled = 0
            if self._send_slice(queue):
                finished = True
                if not queue.sending:
                    line.remove(queue)
        if line:
            self._pace_call = self.clock.callLater(wait_min or 0.0, self._pace)
        if finished:
            self.pump()

    def _slice_size(self) -> int:
        limits = [r for r in (self.limiter.rate, self.limiter.per_key_rate) if r]
        return max(MIN_SLICE, min(MAX_SLICE, int(min(limits, default=0) * SLICE_SECONDS)))

    def _send_slice(self, queue: _Queue) -> bool:
        """Send the next slice of the peer's first read block; True if that ended it."""
        item = queue.sending[0]
        cid, index, data, proof, offset = item
        requester = queue.requester
        if offset is None:  # the record header goes out with the first slice
            requester.start_block(cid, index, len(data), proof)
            offset = 0
        size = min(self._slice_size(), len(data) - offset)
        if size:
            self.limiter.consume(requester.peer_key, size)
            requester.send_block_part(memoryview(data)[offset : offset + size])
        item[4] = offset = offset + size
        if offset < len(data):
            return False
        queue.sending.popleft()
        queue.in_progress -= 1
        self.bytes_sent += len(data)
        self.blocks_sent += 1
        return True

    def _reads_failed(
        self, failure: Any, batch: list[tuple[Requester, str, int, bool]], paced: bool
    ) -> None:
        self._reads -= len(batch)
        for requester, cid, index, _want_proof in batch:
            queue = self._queues.get(requester)
            if queue is not None:
                if paced:
                    queue.in_progress -= 1
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
