"""
The swarm side of one download: the peers that have (some of) the content
(:class:`Source`), the requests in flight to each, and which block to ask
whom for next.

:class:`Swarm` feeds what sources announce (bitfields, HAVEs, disconnects)
and what became of requests (verified, failed, rejected, timed out) to the
rarest-first :class:`~.picker.BlockPicker`, and keeps each source's pipeline
topped up (:meth:`Source.pipeline`: about half a second of the rate measured
from it) within the download rate limits.  It sends requests but holds no
data: verifying and writing blocks is the :class:`~.download.Download`'s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from peerd.providers.files import bitfield
from peerd.providers.files.content import Manifest
from peerd.providers.files.download.picker import BlockPicker
from peerd.ratelimit import Meter

REQUEST_TIMEOUT = 30.0
TARGET_LATENCY = 0.5
MIN_PIPELINE, START_PIPELINE, MAX_PIPELINE = 2, 4, 64


class SwarmHost(Protocol):
    """What a swarm needs from the files provider."""

    clock: Any
    rng: random.Random

    def request(self, peer_id: Any, header: dict) -> None:
        """Send a request to a peer (opening our stream to it if needed)."""

    def download_limit(self, peer_id: Any, length: int) -> float:
        """Seconds until ``length`` more bytes may be requested from the peer (0: now)."""

    def download_consumed(self, peer_id: Any, length: int) -> None:
        """``length`` bytes were requested from the peer."""


@dataclass(eq=False)
class Source:
    """One peer that has (some of) the content."""

    peer_id: Any
    bits: bytes = b""
    in_flight: dict[int, float] = field(default_factory=dict)
    meter: Meter | None = None
    received: int = 0

    def pipeline(self, block_size: int) -> int:
        """Requests to keep in flight: about TARGET_LATENCY of the measured rate."""
        rate = self.meter.rate() if self.meter is not None else 0.0
        if rate <= 0:
            return START_PIPELINE
        return max(MIN_PIPELINE, min(MAX_PIPELINE, int(rate * TARGET_LATENCY / block_size) + 1))


class Swarm:
    """
    The sources of the content ``cid_text`` and the block requests to them.

    Sources are known from their first bitfield on; blocks are asked for
    once :meth:`start_picking` knows the manifest and the blocks held, and
    no longer after :meth:`hold` or :meth:`close`.
    """

    def __init__(self, host: SwarmHost, cid_text: str) -> None:
        self.host = host
        self.cid_text = cid_text
        self.sources: dict[Any, Source] = {}
        self.picker: BlockPicker | None = None
        self._manifest: Manifest | None = None
        self._holding = False

    @property
    def complete(self) -> bool:
        """Whether every block is held (known once picking started)."""
        return self.picker is not None and self.picker.complete

    # -- what sources tell us ----------------------------------------------------------

    def start_picking(self, manifest: Manifest, have: set[int]) -> None:
        """The manifest is known and ``have`` is on disk: count the sources' blocks."""
        self._manifest = manifest
        self.picker = BlockPicker(manifest.block_count, have, self.host.rng)
        for source in self.sources.values():
            flags = self._flags(source.bits)
            if flags is not None:
                self.picker.add_source(source.peer_id, flags)

    def bitfield(self, peer_id: Any, bits: bytes) -> None:
        """``peer_id`` has the blocks of ``bits`` (a new source, or a new bitfield)."""
        source = self.sources.get(peer_id)
        if source is None:
            source = self.sources[peer_id] = Source(
                peer_id, meter=Meter(now=self.host.clock.seconds)
            )
        source.bits = bits
        if self.picker is not None:
            flags = self._flags(bits)
            if flags is None:
                return
            self.picker.add_source(peer_id, flags)
            self.fill(source)

    def have(self, peer_id: Any, index: int) -> None:
        """A source verified block ``index``."""
        source = self.sources.get(peer_id)
        if source is None or self.picker is None:
            return
        if index // 8 < len(source.bits):
            bits = bytearray(source.bits)
            bitfield.add(bits, index)
            source.bits = bytes(bits)
        self.picker.source_has(peer_id, index)
        self.fill(source)

    def remove(self, peer_id: Any) -> None:
        """A source is gone (disconnected, out of the content, or banned)."""
        source = self.sources.pop(peer_id, None)
        if source is not None and self.picker is not None:
            self.picker.remove_source(peer_id)
            self.fill_all()

    # -- what became of requests ---------------------------------------------------------

    def arrived(self, peer_id: Any, index: int, size: int) -> Source | None:
        """
        Block ``index`` (``size`` bytes) came from ``peer_id``: its source, or
        None if it was not asked of that peer (then it is to be ignored).
        """
        source = self.sources.get(peer_id)
        if source is None or self.picker is None or index not in source.in_flight:
            return None
        del source.in_flight[index]
        source.received += size
        assert source.meter is not None
        source.meter.add(size)
        return source

    def block_done(self, index: int, peer_id: Any) -> None:
        """Block ``index`` from ``peer_id`` was verified and written: cancel its duplicates."""
        assert self.picker is not None
        for other in self.picker.block_done(index, peer_id):
            source = self.sources.get(other)
            if source is not None and source.in_flight.pop(index, None) is not None:
                self.host.request(other, {"t": "cancel", "cid": self.cid_text, "i": index})

    def block_failed(self, index: int, peer_id: Any) -> None:
        """Block ``index`` from ``peer_id`` failed verification: never ask that peer again."""
        if self.picker is not None:
            self.picker.block_failed(index, peer_id)

    def rejected(self, peer_id: Any, index: int, busy: bool = False) -> None:
        """The peer will not send a block: never (it lacks it) or not now (``busy``)."""
        source = self.sources.get(peer_id)
        if source is None or self.picker is None or source.in_flight.pop(index, None) is None:
            return
        if busy:
            self.picker.request_timeout(index, peer_id)  # it may be asked again later
        else:
            self.picker.block_failed(index, peer_id)

    def tick(self, now: float) -> None:
        """Free the requests older than REQUEST_TIMEOUT; top up every pipeline."""
        for source in list(self.sources.values()):
            for index, sent in list(source.in_flight.items()):
                if now - sent > REQUEST_TIMEOUT:
                    del source.in_flight[index]
                    self.host.request(
                        source.peer_id, {"t": "cancel", "cid": self.cid_text, "i": index}
                    )
                    if self.picker is not None:
                        self.picker.request_timeout(index, source.peer_id)
            self.fill(source)

    # -- asking --------------------------------------------------------------------------

    def fill(self, source: Source) -> None:
        """Top up the source's pipeline within the download rate limits."""
        picker, manifest = self.picker, self._manifest
        if picker is None or manifest is None or self._holding:
            return
        block_size = manifest.files[0].block_size if manifest.files else 1
        want = source.pipeline(block_size) - len(source.in_flight)
        while want > 0:
            if self.host.download_limit(source.peer_id, 1) > 0:  # out of debt: ask for a block
                return  # the tick retries once the download rate allows
            picked = picker.next_requests(source.peer_id, 1)
            if not picked:
                return
            index = picked[0]
            self.host.download_consumed(source.peer_id, manifest.locate(index)[3])
            source.in_flight[index] = self.host.clock.seconds()
            self.host.request(source.peer_id, {"t": "get", "cid": self.cid_text, "i": index})
            want -= 1

    def fill_all(self) -> None:
        """Top up every source's pipeline."""
        for source in list(self.sources.values()):
            self.fill(source)

    def hold(self) -> None:
        """Ask for no more blocks (the download is finishing)."""
        self._holding = True

    def close(self) -> None:
        """Cancel every request in flight and tell every source we lost interest."""
        self._holding = True
        for source in self.sources.values():
            for index in source.in_flight:
                self.host.request(source.peer_id, {"t": "cancel", "cid": self.cid_text, "i": index})
            self.host.request(source.peer_id, {"t": "uninterest", "cid": self.cid_text})

    def _flags(self, bits: bytes) -> bytearray | None:
        assert self._manifest is not None
        try:
            return bitfield.unpack(bits, self._manifest.block_count)
        except ValueError:
            return None  # a malformed bitfield: not a usable source
