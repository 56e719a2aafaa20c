"""
The block scheduler of one download: which block to ask which source for.

:class:`BlockPicker` is a plain object.  The download feeds it what sources
announce (bitfields, HAVE updates, disconnects) and what happened to requests
(verified, failed, timed out), and asks it for the next blocks to request from
a source.  It picks **rarest first** with a random tie-break, and switches to
**endgame** once every missing block that anyone has is in flight: the last
blocks are then also asked of other sources, and :meth:`BlockPicker.block_done`
names the duplicates to cancel.

How many requests to keep in flight per source is the swarm's
(:meth:`peerd.providers.files.download.swarm.Source.pipeline`).

Bitfields are given as an iterable of block indices, or as ``bytes`` with one
flag byte per block (non-zero means "has"); :func:`.bitfield.unpack` turns the
packed wire form into the latter.

**Complexity** (``N`` blocks, ``P`` sources, ``F`` requests in flight):
the free missing blocks live in buckets by availability (an array per level
with O(1) insert and remove), so

- availability changes are O(1) per block: :meth:`~BlockPicker.add_source`
  and :meth:`~BlockPicker.remove_source` are O(popcount) plus a C-speed scan
  of the bitfield; :meth:`~BlockPicker.source_has` is O(1);
- :meth:`~BlockPicker.block_done` is O(P); :meth:`~BlockPicker.block_failed`
  and :meth:`~BlockPicker.request_timeout` are O(1);
- :meth:`~BlockPicker.next_requests` walks the buckets rarest first from a
  random offset and stops after ``max_new`` hits, examining about
  ``max_new / d`` blocks where ``d`` is the share of free blocks the source
  has.  When that share is small (the source wants less than 1/8 of the
  free blocks) it instead intersects the source's bitfield with the free
  blocks at C speed (O(N / 8) bytes of big-integer work) and examines only
  the hits.  In endgame it looks at the F in-flight blocks only.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Iterator

Peer = Hashable
Bitfield = bytes | bytearray | memoryview | Iterable[int]

_SPARSE_FACTOR = 8
"""Use the intersection path when a source wants < 1/_SPARSE_FACTOR of free blocks."""

_NORMALIZE = bytes([0] + [1] * 255)


def _indices(flags: bytes | bytearray) -> Iterator[int]:
    """The positions of the 1 bytes in ``flags``, in order (scanning at C speed)."""
    i = flags.find(1)
    while i != -1:
        yield i
        i = flags.find(1, i + 1)


class BlockPicker:
    """
    Which blocks of one download to request from which source.

    ``have`` holds the blocks already on disk (a resumed download);
    ``rng`` breaks ties between equally rare blocks.  Peers are any hashable
    key (normally a PeerID).

    Asking is requesting: the blocks :meth:`next_requests` returns are recorded
    as in flight to that source until :meth:`block_done`,
    :meth:`block_failed`, :meth:`request_timeout`, :meth:`release_requests` or
    :meth:`remove_source` settles them.
    """

    def __init__(self, block_count: int, have: Bitfield, rng: random.Random) -> None:
        if block_count < 0:
            raise ValueError(f"block_count must be >= 0, not {block_count}")
        self._n = block_count
        self._rng = rng
        self._have = self._flags(have)
        self._have_count = self._have.count(1)
        self._avail = [0] * block_count
        self._sources: dict[Peer, bytearray] = {}
        self._wanted: dict[Peer, int] = {}  # blocks the source has that we lack
        self._in_flight: dict[Peer, set[int]] = {}
        self._requesters: dict[int, dict[Peer, None]] = {}  # ordered sets, for determinism
        self._refused: dict[Peer, set[int]] = {}  # failed from that source: don't ask it again
        # Free blocks: missing and not in flight, bucketed by availability.
        self._free = bytearray(block_count)
        self._pos = [0] * block_count
        self._buckets: list[list[int]] = [[]]
        self._free_count = 0
        for b in range(block_count):
            if not self._have[b]:
                self._bucket_add(b)

    # -- what we know ---------------------------------------------------

    @property
    def block_count(self) -> int:
        """How many blocks the content has."""
        return self._n

    @property
    def missing(self) -> int:
        """How many blocks we still lack."""
        return self._n - self._have_count

    @property
    def complete(self) -> bool:
        """Whether we hold every block."""
        return self._have_count == self._n

    @property
    def progress(self) -> tuple[int, int]:
        """``(blocks we hold, total blocks)``."""
        return self._have_count, self._n

    @property
    def endgame(self) -> bool:
        """Whether requests are in flight and every missing block that some source has is."""
        return self._free_count == len(self._buckets[0]) and bool(self._requesters)

    def has(self, index: int) -> bool:
        """Whether we hold block ``index``."""
        return bool(self._have[self._check(index)])

    def missing_blocks(self) -> list[int]:
        """The indices of the blocks we lack, ascending."""
        return [b for b in range(self._n) if not self._have[b]]

    def availability(self, index: int) -> int:
        """How many connected sources have block ``index``."""
        return self._avail[self._check(index)]

    def sources(self) -> list[Peer]:
        """The connected sources, in the order they were added."""
        return list(self._sources)

    def interesting(self, peer: Peer) -> bool:
        """Whether ``peer`` has a block we lack."""
        return self._wanted.get(peer, 0) > 0

    def in_flight_count(self, peer: Peer) -> int:
        """How many requests to ``peer`` are outstanding."""
        return len(self._in_flight.get(peer, ()))

    def in_flight(self, peer: Peer) -> frozenset[int]:
        """The blocks requested from ``peer`` and not yet settled."""
        return frozenset(self._in_flight.get(peer, ()))

    # -- what sources tell us -------------------------------------------

    def add_source(self, peer: Peer, bitfield: Bitfield) -> None:
        """A source announced which blocks it has (again: replaces its bitfield)."""
        bits = self._flags(bitfield)
        old = self._sources.get(peer)
        if old is not None:
            self._uncount(old)
        else:
            self._in_flight[peer] = set()
        self._sources[peer] = bits
        while len(self._buckets) <= len(self._sources):
            self._buckets.append([])
        self._shift_availability(bits, +1)
        self._wanted[peer] = bits.count(1) - self._count_common(bits, self._have)

    def source_has(self, peer: Peer, index: int) -> None:
        """A source announced one more block (HAVE); an unknown source is added."""
        self._check(index)
        if peer not in self._sources:
            self.add_source(peer, ())
        bits = self._sources[peer]
        if bits[index]:
            return
        bits[index] = 1
        self._change_availability(index, +1)
        if not self._have[index]:
            self._wanted[peer] += 1

    def remove_source(self, peer: Peer) -> list[int]:
        """
        A source went away.  Its blocks no longer count towards availability
        and its requests are dropped; returns those of its requested blocks
        that are now free (not in flight to anyone else), ascending.
        """
        bits = self._sources.pop(peer, None)
        if bits is None:
            return []
        self._uncount(bits)
        freed = self.release_requests(peer)
        del self._in_flight[peer]
        del self._wanted[peer]
        self._refused.pop(peer, None)
        return freed

    def release_requests(self, peer: Peer) -> list[int]:
        """
        Forget every request to ``peer`` (it choked us, say) but keep it as a
        source; returns the blocks now free, ascending.
        """
        freed = []
        for b in sorted(self._in_flight.get(peer, ())):
            if self._unrequest(b, peer):
                freed.append(b)
        return freed

    # -- what happened to requests --------------------------------------

    def next_requests(self, peer: Peer, max_new: int) -> list[int]:
        """
        Up to ``max_new`` blocks to request from ``peer`` now, recorded as in
        flight to it.

        Outside endgame: blocks the peer has, that we lack and that nobody is
        fetching, rarest first, equally rare ones in random order.  In endgame:
        blocks in flight to other sources (never twice to the same source),
        those with the fewest requesters first.  Never a block we hold or the
        peer lacks, nor one that failed from this peer.
        """
        bits = self._sources.get(peer)
        if max_new <= 0 or bits is None or not self._wanted[peer]:
            return []
        refused = self._refused.get(peer, set())
        free_available = self._free_count - len(self._buckets[0])
        if free_available == 0:
            picks = self._pick_endgame(peer, bits, refused, max_new)
        elif self._wanted[peer] * _SPARSE_FACTOR < free_available:
            picks = self._pick_rarest_sparse(bits, refused, max_new)
        else:
            picks = self._pick_rarest_scan(bits, refused, max_new)
        in_flight = self._in_flight[peer]
        for b in picks:
            if self._free[b]:
                self._bucket_remove(b)
            self._requesters.setdefault(b, {})[peer] = None
            in_flight.add(b)
        return picks

    def block_done(self, index: int, from_peer: Peer | None = None) -> list[Peer]:
        """
        Block ``index`` arrived (from ``from_peer``) and was verified.  Returns the
        other sources it was also requested from, which should get a cancel
        (endgame duplicates).  A block we already hold returns ``[]``.
        """
        self._check(index)
        if self._have[index]:
            return []
        self._have[index] = 1
        self._have_count += 1
        if self._free[index]:
            self._bucket_remove(index)
        requesters = self._requesters.pop(index, {})
        for p in requesters:
            self._in_flight[p].discard(index)
        for p, bits in self._sources.items():
            if bits[index]:
                self._wanted[p] -= 1
        return [p for p in requesters if p != from_peer]

    def block_failed(self, index: int, peer: Peer) -> None:
        """
        Block ``index`` from ``peer`` failed verification or was rejected: it is
        free again, and not asked of ``peer`` again.  (Banning is the caller's.)
        """
        self._check(index)
        self._unrequest(index, peer)
        if peer in self._sources and not self._have[index]:
            self._refused.setdefault(peer, set()).add(index)

    def request_timeout(self, index: int, peer: Peer) -> None:
        """The request for block ``index`` to ``peer`` took too long: free the block."""
        self._check(index)
        self._unrequest(index, peer)

    # -- internals ------------------------------------------------------

    def _check(self, index: int) -> int:
        if not 0 <= index < self._n:
            raise IndexError(f"block {index} out of range 0..{self._n - 1}")
        return index

    def _flags(self, value: Bitfield) -> bytearray:
        if isinstance(value, bytes | bytearray | memoryview):
            if len(value) != self._n:
                raise ValueError(f"expected {self._n} flag bytes, got {len(value)}")
            return bytearray(bytes(value).translate(_NORMALIZE))
        flags = bytearray(self._n)
        for i in value:
            flags[self._check(i)] = 1
        return flags

    def _uncount(self, bits: bytearray) -> None:
        self._shift_availability(bits, -1)

    def _shift_availability(self, bits: bytearray, delta: int) -> None:
        """Add ``delta`` to the availability of every block in ``bits`` (inlined: hot)."""
        avail, free, pos, buckets = self._avail, self._free, self._pos, self._buckets
        for b in _indices(bits):
            level = avail[b]
            avail[b] = level + delta
            if free[b]:
                bucket = buckets[level]
                last = bucket.pop()
                if last != b:
                    i = pos[b]
                    bucket[i] = last
                    pos[last] = i
                bucket = buckets[level + delta]
                pos[b] = len(bucket)
                bucket.append(b)

    def _count_common(self, a: bytearray, b: bytearray) -> int:
        """How many blocks are flagged in both ``a`` and ``b`` (at C speed)."""
        both = int.from_bytes(a, "little") & int.from_bytes(b, "little")
        return both.to_bytes(self._n, "little").count(1)

    def _change_availability(self, b: int, delta: int) -> None:
        if self._free[b]:
            self._bucket_remove(b)
            self._avail[b] += delta
            self._bucket_add(b)
        else:
            self._avail[b] += delta

    def _bucket_add(self, b: int) -> None:
        bucket = self._buckets[self._avail[b]]
        self._pos[b] = len(bucket)
        bucket.append(b)
        self._free[b] = 1
        self._free_count += 1

    def _bucket_remove(self, b: int) -> None:
        bucket = self._buckets[self._avail[b]]
        last = bucket.pop()
        if last != b:
            i = self._pos[b]
            bucket[i] = last
            self._pos[last] = i
        self._free[b] = 0
        self._free_count -= 1

    def _unrequest(self, b: int, peer: Peer) -> bool:
        """Drop ``peer``'s request for ``b``; whether ``b`` became free."""
        in_flight = self._in_flight.get(peer)
        if in_flight is None or b not in in_flight:
            return False
        in_flight.discard(b)
        requesters = self._requesters[b]
        del requesters[peer]
        if requesters:
            return False
        del self._requesters[b]
        self._bucket_add(b)
        return True

    def _pick_rarest_scan(self, bits: bytearray, refused: set[int], max_new: int) -> list[int]:
        picks: list[int] = []
        for bucket in self._buckets[1:]:
            n = len(bucket)
            if not n:
                continue
            start = self._rng.randrange(n)
            for k in range(start, start + n):
                b = bucket[k - n if k >= n else k]
                if bits[b] and b not in refused:
                    picks.append(b)
                    if len(picks) == max_new:
                        return picks
        return picks

    def _pick_rarest_sparse(self, bits: bytearray, refused: set[int], max_new: int) -> list[int]:
        both = int.from_bytes(bits, "little") & int.from_bytes(self._free, "little")
        candidates = both.to_bytes(self._n, "little")
        by_level: dict[int, list[int]] = {}
        for b in _indices(candidates):
            if b not in refused:
                by_level.setdefault(self._avail[b], []).append(b)
        picks: list[int] = []
        for level in sorted(by_level):
            blocks = by_level[level]
            room = max_new - len(picks)
            if len(blocks) >= room:
                picks.extend(self._rng.sample(blocks, room))
                break
            self._rng.shuffle(blocks)
            picks.extend(blocks)
        return picks

    def _pick_endgame(
        self, peer: Peer, bits: bytearray, refused: set[int], max_new: int
    ) -> list[int]:
        candidates = [
            b
            for b, requesters in self._requesters.items()
            if bits[b] and peer not in requesters and b not in refused
        ]
        self._rng.shuffle(candidates)
        candidates.sort(key=lambda b: len(self._requesters[b]))
        return candidates[:max_new]
