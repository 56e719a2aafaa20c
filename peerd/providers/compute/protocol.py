"""
The compute stream protocol (see ``docs/protocol.rst``, "Compute provider").

Every stream carries one request and its answer, as
:mod:`records <peerd.wire.records>`; the requester half-closes after its
request and the worker closes after its answer.  Resetting a ``job``
stream cancels the job.

=============  =====================================  =====================================
request ``t``  fields (body)                          answer ``t`` (body)
=============  =====================================  =====================================
``offer?``     ``module`` (optional hash)             ``offer``: ``limits``, ``running``,
                                                      ``has_module``, or ``refused``
``module``     ``hash`` (the module's bytes)          ``ready`` or ``refused``
``job``        ``module``, ``input`` (hash), ``args``, ``result``: ``reason``, ``exit_code``,
               ``fuel``, ``memory``, ``timeout``      ``fuel_used``, ``cpu``, ``detail``
               (the input bytes)                      (the job's stdout), or ``refused``
=============  =====================================  =====================================

``refused`` carries ``code`` and ``reason`` (naming the worker's config
key).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from peerd.net.recordstream import RecordProtocol
from peerd.providers.compute import reasons
from peerd.providers.compute.limits import Refused, admit_peer
from peerd.providers.compute.modules import CompileFailed, content_hash, valid_hash
from peerd.wire.records import Record

PROTOCOL_VERSION = "1"
MAX_ARGS = 64
MAX_ARG_BYTES = 4096


class RequestFailed(Exception):
    """A request got no answer: the stream was reset or lost."""


def _refusal(e: Refused) -> dict:
    return {"t": "refused", "code": e.code, "reason": e.reason}


def _args(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ARGS:
        raise Refused(reasons.BAD_REQUEST, f"'args' must be a list of at most {MAX_ARGS} strings")
    if not all(isinstance(a, str) for a in value) or sum(len(a) for a in value) > MAX_ARG_BYTES:
        raise Refused(reasons.BAD_REQUEST, "'args' must be short strings")
    return list(value)


def _number(header: dict, name: str) -> float | None:
    value = header.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise Refused(reasons.BAD_REQUEST, f"'{name}' must be a non-negative number")
    return value


@implementer(IHalfCloseableProtocol)
class WorkerStream(RecordProtocol):
    """The worker's side of one compute stream."""

    def __init__(self, provider: Any, peer_id: object) -> None:
        self.max_body = max(provider.limits.max_module, provider.limits.max_input)
        super().__init__()
        self.provider = provider
        self.peer_id = peer_id
        self.answered = False
        self.cancel: Any = None
        self.record: Any = None
        self.lost = False

    def record_received(self, record: Record) -> None:
        """The one request."""
        if self.answered or self.cancel is not None:
            self.protocol_error("one request per compute stream")
            return
        handler = {"offer?": self._offer, "module": self._module, "job": self._job}.get(record.type)
        if handler is None:
            self.protocol_error(f"unknown compute request {record.type!r}")
            return
        try:
            result = handler(record)
        except Refused as e:
            self.answer(_refusal(e))
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        if failure.check(Refused):
            self.answer(_refusal(failure.value))
        elif failure.check(CompileFailed):
            self.answer({"t": "refused", "code": reasons.COMPILE, "reason": failure.value.detail})
        else:
            self.provider.log.failure("compute request failed", failure)
            self.answer({"t": "refused", "code": reasons.CRASHED, "reason": "internal error"})

    def answer(self, header: dict, body: bytes = b"") -> None:
        """Send the answer and close."""
        if self.answered or self.lost:
            return
        self.answered = True
        if header.get("t") == "refused" and header.get("code") != reasons.BUSY:
            self.provider.log.info(
                "compute: refused {peer}: {code}: {reason}",
                peer=self.peer_id,
                code=header.get("code"),
                reason=header.get("reason"),
            )
        self.send(header, body)
        self.transport.loseConnection()

    def _offer(self, record: Record) -> None:
        provider = self.provider
        admit_peer(provider.limits, self.peer_id)
        module = record.header.get("module")
        self.answer(
            {
                "t": "offer",
                "version": PROTOCOL_VERSION,
                "limits": provider.limits.advertised(),
                "running": provider.service.running,
                "has_module": valid_hash(module) and provider.cache.has(module),
            }
        )

    def _module(self, record: Record) -> defer.Deferred:
        provider = self.provider
        admit_peer(provider.limits, self.peer_id)
        module = record.header.get("hash")
        if not valid_hash(module):
            raise Refused(reasons.BAD_REQUEST, "'hash' must be a SHA-256 in hex")
        if record.body_length > provider.limits.max_module:
            raise Refused(
                reasons.MODULE_TOO_LARGE,
                f"the module has {record.body_length} bytes, over {provider.limits.max_module}",
                "max_module",
            )
        d = provider.cache.add(module, record.body)
        d.addCallback(lambda _: self.answer({"t": "ready", "hash": module}))
        d.addErrback(self._module_failed)
        return d

    def _module_failed(self, failure: Any) -> None:
        if failure.check(ValueError):
            raise Refused(reasons.BAD_REQUEST, str(failure.value))
        failure.raiseException()

    def _job(self, record: Record) -> defer.Deferred:
        provider = self.provider
        header = record.header
        module = header.get("module")
        if not valid_hash(module):
            raise Refused(reasons.BAD_REQUEST, "'module' must be a SHA-256 in hex")
        args = _args(header.get("args", []))
        request = {name: _number(header, name) for name in ("fuel", "memory", "timeout")}
        data = record.body
        if header.get("input") is not None and header.get("input") != content_hash(data):
            raise Refused(reasons.BAD_REQUEST, "the input does not match its hash")
        provider.service.check(self.peer_id, module, len(data))
        d = defer.ensureDeferred(
            provider.service.run(self.peer_id, module, data, args, request, self._started)
        )
        self.cancel = d
        d.addCallback(self._job_done)
        return d

    def _started(self, record: Any) -> None:
        self.record = record

    def _job_done(self, outcome: tuple) -> None:
        result, output = outcome
        self.answer({"t": "result", **self.provider.present(result, output)}, output)

    def readConnectionLost(self) -> None:
        """The requester has said all it will."""

    def connectionLost(self, reason: object = None) -> None:
        """A reset stream cancels its job."""
        self.lost = True
        record = self.record
        if record is not None and record.cancel is not None and not self.answered:
            record.cancel()


@implementer(IHalfCloseableProtocol)
class Request(RecordProtocol):
    """The requester's side: send one record, get one answer (``done``)."""

    def __init__(self, header: dict, body: bytes = b"", max_answer: int = 64 << 20) -> None:
        self.max_body = max_answer
        super().__init__()
        self.header = header
        self.body = body
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        """Ask."""
        self.send(self.header, self.body)
        self.body = b""

    def record_received(self, record: Record) -> None:
        """The answer."""
        if not self.done.called:
            self.done.callback(record)

    def readConnectionLost(self) -> None:
        """The worker closed its side."""
        self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        """No answer: fail."""
        if not self.done.called:
            why = getattr(getattr(reason, "value", None), "reason", None) or "stream lost"
            self.done.errback(RequestFailed(str(why)))

    def abort(self, why: str) -> None:
        """Give up (a timeout, a cancellation): reset the stream."""
        if self.transport is not None:
            reset = getattr(self.transport, "reset", None)
            if reset is not None:
                reset(why)
            else:
                self.transport.abortConnection()
