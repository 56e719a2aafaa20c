"""The server side of the storage stream protocol, driven with a fake transport."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from peerd.providers.storage.protocol import MAX_QUEUED_BYTES, ServerStream
from peerd.providers.storage.server import StorageServer
from peerd.wire.records import RecordDecoder, encode_record

SI = "00112233445566778899aabbccddeeff"


class SlowDisk:
    """``run_in_thread`` whose calls finish only when the test says so."""

    def __init__(self) -> None:
        self.held: list[tuple[defer.Deferred, object, tuple]] = []
        self.hold = False

    def __call__(self, function, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.hold:
            return defer.maybeDeferred(function, *args, **kwargs)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, function, args))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, function, args in held:
            d.callback(function(*args))  # type: ignore[operator]


class FakeStream(StringTransport):
    """A StringTransport with the stream's pause state and reset."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_paused = False
        self.resets: list[str] = []

    def pauseProducing(self) -> None:
        self.reads_paused = True

    def resumeProducing(self) -> None:
        self.reads_paused = False

    def reset(self, reason: str, code: str = "cancelled") -> None:
        self.resets.append(reason)
        self.connected = False


def _setup(tmp_path: Path) -> tuple[ServerStream, FakeStream, SlowDisk]:
    disk = SlowDisk()
    server = StorageServer(
        tmp_path,
        clock=Clock(),
        run_in_thread=disk,
        quota=1 << 40,
        max_share_size=1 << 40,
        min_free_disk=0,
        max_lease=86400.0,
        disk_free=lambda: 1 << 50,
    )
    defer.Deferred.fromCoroutine(server.load())
    stream = ServerStream(server, "peer")
    transport = FakeStream()
    transport.connected = True
    stream.makeConnection(transport)
    return stream, transport, disk


def _send(stream: ServerStream, header: dict, body: bytes = b"") -> None:
    stream.dataReceived(b"".join(encode_record(header, body)))


def _answers(transport: FakeStream) -> list:
    return RecordDecoder(1 << 26).feed(transport.value())


def test_slow_disk_pauses_the_client(tmp_path: Path) -> None:
    """Blocks queued beyond MAX_QUEUED_BYTES stop the stream's reading until the disk catches up."""
    stream, transport, disk = _setup(tmp_path)
    block = os.urandom(4 * 1024 * 1024)
    count = MAX_QUEUED_BYTES // len(block) + 2
    _send(
        stream,
        {
            "t": "allocate",
            "id": 0,
            "si": SI,
            "shares": [0],
            "size": len(block) * count + 4096,
            "owner": SI,
            "secret": b"s" * 32,
            "lease": 3600,
        },
    )
    assert _answers(transport)[0].type == "allocated"
    disk.hold = True
    for seg in range(count):
        _send(stream, {"t": "write", "id": seg + 1, "sh": 0, "seg": seg}, block)
    assert transport.reads_paused
    while disk.held:
        disk.release()
    assert not transport.reads_paused
    acks = [r for r in _answers(transport) if r.type == "ack"]
    assert [r.header["seg"] for r in acks] == list(range(count))


def test_unallocated_write_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A write to a share never allocated is answered with an error; garbage resets the stream."""
    stream, transport, _ = _setup(tmp_path)
    _send(stream, {"t": "write", "id": 1, "sh": 3, "seg": 0}, b"x")
    [answer] = _answers(transport)
    assert answer.type == "error" and "not allocated" in answer.header["why"]
    _send(stream, {"t": "allocate", "id": 2, "si": "../etc", "shares": [0]})
    assert transport.resets
