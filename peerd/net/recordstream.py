"""
:class:`RecordProtocol`: a stream protocol that exchanges
:mod:`records <peerd.wire.records>`, for providers that speak in messages.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from peerd.wire.frames import ProtocolError
from peerd.wire.records import Record, RecordDecoder, encode_record, encode_record_head

log = Logger()


class RecordProtocol(Protocol):
    """
    Subclass and implement :meth:`record_received`. A peer that sends a
    malformed or oversize record has the stream reset (``protocol-error``).
    """

    max_body = 16 * 1024 * 1024
    accepts_buffers = True  # bodies are kept as the pieces that arrived (see Record.parts)

    def __init__(self) -> None:
        self._decoder = RecordDecoder(self.max_body)

    def dataReceived(self, data: bytes) -> None:
        """Decode and dispatch records."""
        try:
            records = self._decoder.feed(data)
        except ProtocolError as e:
            self.protocol_error(str(e))
            return
        for record in records:
            if not self.transport.connected:
                return
            self.record_received(record)

    def send(self, header: dict, body: bytes = b"") -> None:
        """Send one record."""
        self.transport.writeSequence(encode_record(header, body))

    def send_head(self, header: dict, body_length: int) -> None:
        """
        Start a record whose ``body_length`` body bytes the caller then
        writes to the transport itself; nothing else may be sent on this
        stream until they all are.
        """
        self.transport.writeSequence(encode_record_head(header, body_length))

    def protocol_error(self, reason: str) -> None:
        """The peer broke the record protocol: reset the stream."""
        log.warn("resetting a stream: {reason}", reason=reason)
        reset: Any = getattr(self.transport, "reset", None)
        if reset is not None:
            reset(reason, "protocol-error")
        else:
            self.transport.abortConnection()

    def record_received(self, record: Record) -> None:
        """Handle one record."""
        raise NotImplementedError
