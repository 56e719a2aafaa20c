"""
The files stream protocol (see ``docs/protocol.rst``, "Files provider").

Each peer opens its own stream for the requests it makes
(:class:`RequestingStream`); the other side answers on that stream and
pushes HAVE updates for the content the requester declared interest in
(:class:`ServingStream`).  Messages are :mod:`records <peerd.wire.records>`
whose header ``"t"`` names the type:

requests: ``interest``, ``uninterest``, ``manifest?``, ``hashes?``, ``get``,
``cancel``, ``pex?``; answers and pushes: ``bitfield``, ``none``,
``manifest``, ``hashes``, ``block``, ``reject``, ``pex``, ``have``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from peerd.net.recordstream import RecordProtocol
from peerd.wire.records import Record

PROTOCOL_VERSION = "1"
MAX_RECORD_BODY = 24 * 1024 * 1024


class FilesHost(Protocol):
    """What the streams need from the files provider."""

    scheduler: Any

    def describe(self, cid: str) -> tuple[bytes, int] | None:
        """``(bitfield, block_count)`` of content we hold in full or part, or None."""

    def manifest_bytes(self, cid: str) -> bytes | None:
        """The encoded manifest, or None."""

    def leaves_bytes(self, cid: str) -> bytes | None:
        """Every file's leaf hashes concatenated in manifest order, or None."""

    def pex_addresses(self, cid: str, exclude: object) -> list[str]:
        """Dialable addresses of other peers known to hold or want ``cid``."""

    def interest_changed(self, stream: ServingStream) -> None:
        """A peer declared or withdrew interest."""

    def response_received(self, peer_id: object, record: Record) -> None:
        """An answer or push arrived on one of our requesting streams."""

    def requesting_stream_lost(self, peer_id: object, stream: RequestingStream) -> None:
        """One of our requesting streams ended."""

    def serving_stream_lost(self, stream: ServingStream) -> None:
        """A peer's requesting stream ended."""


def _cid(record: Record) -> str | None:
    value = record.header.get("cid")
    return value if isinstance(value, str) and len(value) < 200 else None


def _block_header(cid: str, index: int, proof: list[bytes] | None) -> dict:
    header: dict = {"t": "block", "cid": cid, "i": index}
    if proof is not None:
        header["proof"] = proof
    return header


def _index(record: Record) -> int | None:
    value = record.header.get("i")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@implementer(IPushProducer)
class ServingStream(RecordProtocol):
    """Answers one peer's requests; pushes HAVEs for the content it is interested in."""

    max_body = 64 * 1024

    def __init__(self, host: FilesHost, peer_id: object) -> None:
        super().__init__()
        self.host = host
        self.peer_id = peer_id
        self.peer_key = peer_id
        self.interests: set[str] = set()
        self.congested = False
        self._body_left = 0  # bytes of a block body still to come (start_block)
        self._held: list[tuple[dict, bytes]] = []  # records waiting for that body to end

    def connectionMade(self) -> None:
        """Follow the stream's backpressure so the scheduler skips a congested peer."""
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        """The peer is not reading fast enough."""
        self.congested = True

    def resumeProducing(self) -> None:
        """The peer caught up."""
        self.congested = False
        self.host.scheduler.pump()

    def stopProducing(self) -> None:
        """The stream is going away."""
        self.congested = True

    def record_received(self, record: Record) -> None:
        """Dispatch a request."""
        kind = record.type
        cid = _cid(record)
        if cid is None:
            self.protocol_error(f"files request {kind!r} without a content ID")
            return
        if kind == "get":
            index = _index(record)
            if index is None:
                self.protocol_error("get without a block index")
                return
            self.host.scheduler.request(self, cid, index, bool(record.header.get("proof")))
        elif kind == "cancel":
            index = _index(record)
            if index is not None:
                self.host.scheduler.cancel(self, cid, index)
        elif kind == "interest":
            described = self.host.describe(cid)
            if described is None:
                self.send({"t": "none", "cid": cid})
            else:
                bits, count = described
                self.send({"t": "bitfield", "cid": cid, "n": count}, bits)
            self.interests.add(cid)
            self.host.interest_changed(self)
        elif kind == "uninterest":
            self.interests.discard(cid)
            self.host.interest_changed(self)
        elif kind == "manifest?":
            self._send_or_none("manifest", cid, self.host.manifest_bytes(cid))
        elif kind == "hashes?":
            self._send_or_none("hashes", cid, self.host.leaves_bytes(cid))
        elif kind == "pex?":
            self.send({"t": "pex", "cid": cid, "peers": self.host.pex_addresses(cid, self.peer_id)})
        else:
            self.protocol_error(f"unknown files request {kind!r}")

    def _send_or_none(self, kind: str, cid: str, body: bytes | None) -> None:
        if body is None:
            self.send({"t": "none", "cid": cid})
        else:
            self.send({"t": kind, "cid": cid}, body)

    # -- used by the scheduler and the provider --------------------------------------

    def send(self, header: dict, body: bytes = b"") -> None:
        """Send a record, or hold it until the block body in progress has gone."""
        if self._body_left:
            self._held.append((header, body))
        else:
            super().send(header, body)

    def send_block(self, cid: str, index: int, data: bytes, proof: list[bytes] | None) -> None:
        """Send a block (with its Merkle proof when asked)."""
        self.send(_block_header(cid, index, proof), data)

    def start_block(self, cid: str, index: int, length: int, proof: list[bytes] | None) -> None:
        """Send a block's header; its body follows in parts (``send_block_part``)."""
        if self._body_left:
            raise RuntimeError("a block body is already in progress on this stream")
        self.send_head(_block_header(cid, index, proof), length)
        self._body_left = length

    def send_block_part(self, data: bytes | memoryview) -> None:
        """The next part of the body begun by ``start_block``."""
        if len(data) > self._body_left:
            raise ValueError(f"{len(data)} bytes given, {self._body_left} left of the block")
        self.transport.write(data)
        self._body_left -= len(data)
        if not self._body_left:
            held, self._held = self._held, []
            for header, body in held:
                self.send(header, body)

    def send_reject(self, cid: str, index: int, why: str) -> None:
        """Refuse a request."""
        self.send({"t": "reject", "cid": cid, "i": index, "why": why})

    def send_have(self, cid: str, index: int) -> None:
        """Tell the peer we now hold block ``index``."""
        self.send({"t": "have", "cid": cid, "i": index})

    def connectionLost(self, reason: object = None) -> None:
        """Forget this peer's requests."""
        self.host.serving_stream_lost(self)


class RequestingStream(RecordProtocol):
    """Carries our requests to one peer; hands answers to the provider."""

    max_body = MAX_RECORD_BODY

    def __init__(self, host: FilesHost, peer_id: object) -> None:
        super().__init__()
        self.host = host
        self.peer_id = peer_id
        self.lost = False

    def record_received(self, record: Record) -> None:
        """An answer or a push."""
        self.host.response_received(self.peer_id, record)

    def request(self, header: dict) -> None:
        """Send a request (ignored once the stream is gone)."""
        if not self.lost:
            self.send(header)

    def connectionLost(self, reason: object = None) -> None:
        """Tell the provider."""
        self.lost = True
        self.host.requesting_stream_lost(self.peer_id, self)
