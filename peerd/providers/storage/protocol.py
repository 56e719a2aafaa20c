"""
The storage stream protocol (see ``docs/protocol.rst``, "Storage provider").

A client opens a stream to a server's storage provider and sends requests
as :mod:`records <peerd.wire.records>`; every request carries an ``id``
(an int) that the answer repeats, so answers may come in any order.

requests: ``allocate``, ``write``, ``close``, ``list``, ``trailer``,
``read``, ``renew``, ``cancel``; answers: ``allocated``, ``ack``,
``closed``, ``shares``, ``trailer``, ``block``, ``renewed``,
``cancelled``, ``error``.

A malformed request resets the stream; a request that cannot be served is
answered with ``error`` (``why``, and ``corrupt: true`` for a share that
failed its integrity check).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from peerd.net.recordstream import RecordProtocol
from peerd.providers.storage.capability import KEY_SIZE
from peerd.providers.storage.codec import IntegrityError
from peerd.providers.storage.server import StorageServer
from peerd.providers.storage.share_files import (
    CorruptShare,
    ShareRefused,
    ShareWriter,
    valid_index,
    valid_shnum,
)
from peerd.wire.records import Record

log = Logger()

PROTOCOL_VERSION = "1"
MAX_RECORD_BODY = 16 * 1024 * 1024
MAX_PENDING = 128
"""Requests a server works on at once for one stream; more is a protocol error."""
MAX_SECONDS = 100 * 365 * 86400.0
MAX_QUEUED_BYTES = 32 * 1024 * 1024
"""Block bytes a server holds for one stream before it stops reading from it."""


class RequestError(Exception):
    """A request the server answers with ``error``."""

    def __init__(self, why: str, corrupt: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.corrupt = corrupt


class Malformed(Exception):
    """A request that breaks the protocol: the stream is reset."""


def _int(header: dict, name: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Malformed(f"field {name!r} must be a non-negative int")
    return value


def _index(header: dict) -> str:
    si = header.get("si")
    if not valid_index(si):
        raise Malformed("field 'si' must be a storage index (32 lowercase hex digits)")
    return si  # type: ignore[return-value]


def _shnum(header: dict) -> int:
    sh = header.get("sh")
    if not valid_shnum(sh):
        raise Malformed("field 'sh' must be a share number from 0 to 254")
    return sh  # type: ignore[return-value]


def _secret(header: dict) -> bytes:
    secret = header.get("secret")
    if not isinstance(secret, bytes) or len(secret) != KEY_SIZE:
        raise Malformed("field 'secret' must be 32 bytes")
    return secret


def _seconds(header: dict) -> float:
    value = header.get("lease")
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 < value <= MAX_SECONDS
    ):
        raise Malformed("field 'lease' must be a positive number of seconds")
    return float(value)


class ServerStream(RecordProtocol):
    """Serves one client stream: turns requests into :class:`StorageServer` calls."""

    max_body = MAX_RECORD_BODY

    def __init__(self, server: StorageServer, peer_id: object) -> None:
        super().__init__()
        self.server = server
        self.peer_id = peer_id
        self.si: str | None = None
        self.writers: dict[int, ShareWriter] = {}
        self._chains: dict[int, defer.Deferred] = {}
        self.pending = 0
        self.queued_bytes = 0
        self.paused = False
        self.lost = False

    def record_received(self, record: Record) -> None:
        """Dispatch one request."""
        try:
            rid = _int(record.header, "id")
            handler = self._handlers().get(record.type)
            if handler is None:
                raise Malformed(f"unknown storage request {record.type!r}")
            if self.pending >= MAX_PENDING:
                raise Malformed(f"more than {MAX_PENDING} storage requests in flight")
            if record.type in ("write", "close"):
                sh = _shnum(record.header)
        except Malformed as e:
            self.protocol_error(str(e))
            return
        self.pending += 1
        if record.type in ("write", "close"):
            # writes to one share run in order, one at a time
            d = defer.Deferred()
            self._queue(len(record.body))
            d.addBoth(self._dequeue, len(record.body))

            def run(_: object, done: defer.Deferred = d) -> defer.Deferred:
                inner = defer.Deferred.fromCoroutine(handler(record))
                inner.chainDeferred(done)
                return inner

            previous = self._chains.get(sh) or defer.succeed(None)
            self._chains[sh] = previous.addBoth(run)
        else:
            d = defer.Deferred.fromCoroutine(handler(record))
        d.addCallbacks(self._answer, self._failed, (rid,), None, (rid, record.type))

    def _queue(self, size: int) -> None:
        """Stop reading from a client that sends blocks faster than the disk takes them."""
        self.queued_bytes += size
        if self.queued_bytes > MAX_QUEUED_BYTES and not self.paused and not self.lost:
            self.paused = True
            self.transport.pauseProducing()

    def _dequeue(self, result: object, size: int) -> object:
        self.queued_bytes -= size
        if self.paused and self.queued_bytes <= MAX_QUEUED_BYTES // 2 and not self.lost:
            self.paused = False
            self.transport.resumeProducing()
        return result

    def _handlers(self) -> dict[str, Callable[[Record], Awaitable[tuple[dict, bytes]]]]:
        return {
            "allocate": self._allocate,
            "write": self._write,
            "close": self._close,
            "list": self._list,
            "trailer": self._trailer,
            "read": self._read,
            "renew": self._renew,
            "cancel": self._cancel,
        }

    def _answer(self, result: tuple[dict, bytes], rid: int) -> None:
        self.pending -= 1
        header, body = result
        header["id"] = rid
        if not self.lost:
            self.send(header, body)

    def _failed(self, failure: Any, rid: int, kind: str) -> None:
        self.pending -= 1
        error = failure.value
        if isinstance(error, Malformed):
            if not self.lost:
                self.protocol_error(str(error))
            return
        if isinstance(error, RequestError):
            header = {"t": "error", "why": error.why, "corrupt": error.corrupt}
        elif isinstance(error, CorruptShare):
            header = {"t": "error", "why": f"corrupt share: {error}", "corrupt": True}
        elif isinstance(error, (ShareRefused, IntegrityError, FileNotFoundError, IndexError)):
            header = {"t": "error", "why": str(error), "corrupt": False}
        else:
            log.failure("storage: {kind} request failed", failure, kind=kind)
            header = {
                "t": "error",
                "why": f"internal error: {type(error).__name__}",
                "corrupt": False,
            }
        header["id"] = rid
        if not self.lost:
            self.send(header)

    # -- writing -----------------------------------------------------------------------

    async def _allocate(self, record: Record) -> tuple[dict, bytes]:
        h = record.header
        si = _index(h)
        shnums = h.get("shares")
        if not isinstance(shnums, list) or not shnums or not all(valid_shnum(s) for s in shnums):
            raise Malformed("field 'shares' must be a list of share numbers")
        size = _int(h, "size")
        owner = h.get("owner")
        if not isinstance(owner, str) or not valid_index(owner):
            raise Malformed("field 'owner' must be 32 lowercase hex digits")
        if self.si is not None and self.si != si:
            raise Malformed("one stream writes to one storage index")
        if any(sh in self.writers for sh in shnums):
            raise Malformed("share allocated twice on one stream")
        self.si = si
        allocation = await self.server.allocate(
            si, sorted(set(shnums)), size, owner, _secret(h), _seconds(h)
        )
        if allocation.refused is not None:
            return {"t": "error", "why": allocation.refused, "refused": True}, b""
        if self.lost:
            for writer in allocation.writers.values():
                await self.server.abort(writer)
            return {}, b""
        self.writers.update(allocation.writers)
        return {"t": "allocated", "have": allocation.have, "new": sorted(allocation.writers)}, b""

    def _writer(self, h: dict) -> ShareWriter:
        writer = self.writers.get(_shnum(h))
        if writer is None:
            raise RequestError(f"share {h.get('sh')} is not allocated on this stream")
        if writer.done:
            raise RequestError(f"share {writer.shnum} is closed or was aborted")
        return writer

    async def _write(self, record: Record) -> tuple[dict, bytes]:
        writer = self._writer(record.header)
        seg = _int(record.header, "seg")
        try:
            await self.server.run_in_thread(writer.write_block, seg, record.body)
        except Exception:
            await self.server.abort(writer)
            raise
        return {"t": "ack", "sh": writer.shnum, "seg": seg}, b""

    async def _close(self, record: Record) -> tuple[dict, bytes]:
        writer = self._writer(record.header)
        ueb_len = _int(record.header, "ueb")
        if ueb_len > len(record.body):
            raise Malformed("field 'ueb' is longer than the body")
        size = await self.server.commit(writer, record.body[:ueb_len], record.body[ueb_len:])
        return {"t": "closed", "sh": writer.shnum, "size": size}, b""

    # -- reading -----------------------------------------------------------------------------

    async def _list(self, record: Record) -> tuple[dict, bytes]:
        si = _index(record.header)
        return {"t": "shares", "si": si, "shares": self.server.held(si)}, b""

    async def _trailer(self, record: Record) -> tuple[dict, bytes]:
        si, sh = _index(record.header), _shnum(record.header)
        ueb, hashes = await self.server.read_trailer(si, sh)
        return {"t": "trailer", "si": si, "sh": sh, "ueb": len(ueb)}, ueb + hashes

    async def _read(self, record: Record) -> tuple[dict, bytes]:
        si, sh = _index(record.header), _shnum(record.header)
        seg = _int(record.header, "seg")
        block = await self.server.read_block(si, sh, seg)
        return {"t": "block", "si": si, "sh": sh, "seg": seg}, block

    # -- leases --------------------------------------------------------------------------------

    async def _renew(self, record: Record) -> tuple[dict, bytes]:
        h = record.header
        si = _index(h)
        ok = await self.server.renew(si, _secret(h), _seconds(h))
        return {"t": "renewed", "si": si, "ok": ok, "shares": self.server.held(si)}, b""

    async def _cancel(self, record: Record) -> tuple[dict, bytes]:
        si = _index(record.header)
        ok = await self.server.cancel(si, _secret(record.header))
        return {"t": "cancelled", "si": si, "ok": ok}, b""

    def connectionLost(self, reason: object = None) -> None:
        """Shares not closed are thrown away, with their reservations."""
        self.lost = True
        for writer in self.writers.values():
            if not writer.done:
                d = defer.Deferred.fromCoroutine(self.server.abort(writer))
                d.addErrback(lambda f: log.failure("storage: aborting a share", f))


# -- client side ---------------------------------------------------------------------------------


class RemoteError(Exception):
    """The server answered ``error``."""

    def __init__(self, why: str, corrupt: bool = False, refused: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.corrupt = corrupt
        self.refused = refused


class StreamGone(Exception):
    """The stream to the server ended (or timed out) before the answer came."""


class ClientStream(RecordProtocol):
    """Our stream to one server: :meth:`call` sends a request and returns a Deferred answer."""

    max_body = MAX_RECORD_BODY

    def __init__(self, clock: Any, timeout: float) -> None:
        super().__init__()
        self.clock = clock
        self.timeout = timeout
        self._next_id = 0
        self._waiting: dict[int, tuple[defer.Deferred, Any]] = {}
        self.lost: str | None = None

    def call(self, header: dict, body: bytes = b"") -> defer.Deferred[Record]:
        """Send a request; fires with the answer :class:`Record`, fails with
        :class:`RemoteError` or :class:`StreamGone`."""
        if self.lost is not None:
            return defer.fail(StreamGone(self.lost))
        rid = self._next_id
        self._next_id += 1
        d: defer.Deferred[Record] = defer.Deferred()
        timer = self.clock.callLater(self.timeout, self._timed_out, rid)
        self._waiting[rid] = (d, timer)
        self.send({**header, "id": rid}, body)
        return d

    def _timed_out(self, rid: int) -> None:
        entry = self._waiting.pop(rid, None)
        if entry is not None:
            why = f"no answer within {self.timeout:g}s ([provider:storage] request_timeout)"
            entry[0].errback(StreamGone(why))
            self.close(why)

    def record_received(self, record: Record) -> None:
        """Route an answer to its caller."""
        rid = record.header.get("id")
        entry = self._waiting.pop(rid, None) if isinstance(rid, int) else None  # type: ignore[arg-type]
        if entry is None:
            return
        d, timer = entry
        if timer.active():
            timer.cancel()
        if record.type == "error":
            h = record.header
            why = h.get("why") if isinstance(h.get("why"), str) else "unspecified error"
            d.errback(RemoteError(why, h.get("corrupt") is True, h.get("refused") is True))  # type: ignore[arg-type]
        else:
            d.callback(record)

    def close(self, reason: str = "done") -> None:
        """End the stream (pending calls fail)."""
        if self.lost is None and self.transport is not None:
            self.transport.loseConnection()
        self._fail_all(reason)

    def connectionLost(self, reason: object = None) -> None:
        """Fail every pending call."""
        detail = getattr(getattr(reason, "value", None), "reason", None) or "stream closed"
        self._fail_all(str(detail))

    def _fail_all(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        waiting, self._waiting = self._waiting, {}
        for d, timer in waiting.values():
            if timer.active():
                timer.cancel()
            d.errback(StreamGone(reason))
