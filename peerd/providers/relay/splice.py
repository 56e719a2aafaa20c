"""
:class:`Splice`: joins two streams into one circuit on the relay.

Bytes read from one end are written to the other, within the circuit's
byte and time limits and the relay's shared rate.  Flow control runs end to
end: when one end cannot take more, the other end stops reading, so its
window closes and the far sender pauses; the relay buffers at most about a
window per direction.  The relay never looks inside: the two peers run TLS
through it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from peerd.providers.relay.circuits import BACKWARD, FORWARD
from peerd.providers.relay.limits import CIRCUIT_BYTES, describe_stop

log = Logger()


@implementer(IPushProducer)
class SpliceEnd(Protocol):
    """One end of a circuit: reads from its stream, writes to the other end's."""

    def __init__(self, splice: Splice, direction: str) -> None:
        self.splice = splice
        self.direction = direction  # of the bytes this end reads
        self.other: SpliceEnd | None = None
        self._paused_for: set[str] = set()

    # -- reading from our stream -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Forward to the other end (the splice enforces the limits)."""
        self.splice.forward(self, data)

    def connectionLost(self, reason: object = None) -> None:
        """Our side ended: end the circuit."""
        self.splice.end_lost(self, reason)

    # -- pausing our reading, for several reasons at once ----------------------------

    def pause(self, why: str) -> None:
        """Stop reading from our stream (``why``: ``flow`` or ``rate``)."""
        if not self._paused_for and self.transport is not None:
            self.transport.pauseProducing()
        self._paused_for.add(why)

    def resume(self, why: str) -> None:
        """Read again once no reason to pause is left."""
        self._paused_for.discard(why)
        if not self._paused_for and self.transport is not None and self.transport.connected:
            self.transport.resumeProducing()

    # -- IPushProducer, registered with the OTHER end's stream: it says when that
    #    stream's peer cannot take more, so we stop reading ours ---------------------

    def pauseProducing(self) -> None:
        """The other end is backed up."""
        self.pause("flow")

    def resumeProducing(self) -> None:
        """The other end drained."""
        self.resume("flow")

    def stopProducing(self) -> None:
        """The other end is gone."""
        self.pause("flow")


class Splice:
    """
    One circuit: ``source`` (the dialer's stream) and ``target`` (the
    reserved peer's stream), accounted against ``circuit``.

    :param table: the relay's :class:`~peerd.providers.relay.circuits.CircuitTable`.
    :param rate: the shared :class:`~peerd.providers.relay.shared_rate.RelayRate`.
    """

    def __init__(self, circuit: Any, table: Any, rate: Any, clock: Any, limits: Any) -> None:
        self.circuit = circuit
        self.table = table
        self.rate = rate
        self.clock = clock
        self.limits = limits
        self.source = SpliceEnd(self, FORWARD)
        self.target = SpliceEnd(self, BACKWARD)
        self.source.other, self.target.other = self.target, self.source
        self.closed = False
        self._rate_wakeup: Any = None

    def join(self, source_stream: Any, target_stream: Any) -> None:
        """
        Join the streams: ``target_stream`` already has :attr:`target`
        attached (it was opened with it); ``source_stream`` gets :attr:`source`,
        and whatever the dialer sent meanwhile flows on.
        """
        source_stream.registerProducer(self.target, True)
        target_stream.registerProducer(self.source, True)
        source_stream.attach(self.source)

    def forward(self, end: SpliceEnd, data: bytes) -> None:
        """Pass bytes read at ``end`` to the other end, within the limits."""
        if self.closed or end.other is None or end.other.transport is None:
            return
        allowed = self.circuit.allowance(len(data))
        if allowed:
            end.other.transport.write(data[:allowed] if allowed < len(data) else data)
        stop = self.circuit.record(end.direction, allowed)
        if stop is None and allowed < len(data):
            stop = CIRCUIT_BYTES
        if stop is not None:
            self.close(stop)
            return
        self.rate.consume(allowed)
        delay = self.rate.delay(1)
        if delay > 0:
            self._throttle(delay)

    def _throttle(self, delay: float) -> None:
        """Over the relay's rate: stop reading both ends for a while."""
        self.source.pause("rate")
        self.target.pause("rate")
        if self._rate_wakeup is None or not self._rate_wakeup.active():
            self._rate_wakeup = self.clock.callLater(delay, self._unthrottle)

    def _unthrottle(self) -> None:
        self._rate_wakeup = None
        if self.closed:
            return
        delay = self.rate.delay(1)
        if delay > 0:
            self._rate_wakeup = self.clock.callLater(delay, self._unthrottle)
            return
        self.source.resume("rate")
        self.target.resume("rate")

    def end_lost(self, end: SpliceEnd, reason: object) -> None:
        """One side went away: the other side is closed (after its queued bytes)."""
        if self.closed:
            return
        self.closed = True
        self.table.close(self.circuit, "ended")
        other = end.other
        if other is not None and other.transport is not None and other.transport.connected:
            other.transport.loseConnection()
        self._cancel_wakeup()

    def close(self, code: str) -> None:
        """Cut the circuit: both streams are reset with ``code``."""
        if self.closed:
            return
        self.closed = True
        reason = describe_stop(code, self.limits)
        log.info(
            "cutting circuit {id} ({src} -> {dst}): {reason}",
            id=self.circuit.id,
            src=self.circuit.src,
            dst=self.circuit.dst,
            reason=reason,
        )
        self.table.close(self.circuit, code)
        for end in (self.source, self.target):
            if end.transport is not None and end.transport.connected:
                end.transport.reset(reason, code)
        self._cancel_wakeup()

    def _cancel_wakeup(self) -> None:
        if self._rate_wakeup is not None and self._rate_wakeup.active():
            self._rate_wakeup.cancel()
        self._rate_wakeup = None
