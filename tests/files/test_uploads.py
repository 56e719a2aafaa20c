"""The upload scheduler's pacing under limits, and the serving stream's framing of paced blocks."""

from __future__ import annotations

from rate_helpers import window_rates
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from peerd.providers.files.protocol import ServingStream
from peerd.providers.files.upload.scheduler import MAX_SLICE, MIN_SLICE, UploadScheduler
from peerd.ratelimit import RateLimiter
from peerd.wire.records import RecordDecoder

KiB, MiB = 1024, 1024 * 1024
MB = 1_000_000


class FakeRequester:
    """Records what the scheduler sends, with the time, and checks the framing."""

    congested = False

    def __init__(self, clock: Clock, name: str) -> None:
        self.clock = clock
        self.peer_key = name
        self.parts: list[tuple[float, int]] = []
        self.blocks: list[tuple[int, bytes]] = []
        self.rejects: list[tuple[int, str]] = []
        self._current: tuple[int, int, list[bytes]] | None = None

    def send_block(self, cid, index, data, proof):
        self.parts.append((self.clock.seconds(), len(data)))
        self.blocks.append((index, bytes(data)))

    def start_block(self, cid, index, length, proof):
        assert self._current is None, "a block started inside another"
        self._current = (index, length, [])

    def send_block_part(self, data):
        assert self._current is not None and len(data) <= MAX_SLICE
        index, length, got = self._current
        got.append(bytes(data))
        self.parts.append((self.clock.seconds(), len(data)))
        if sum(map(len, got)) == length:
            self.blocks.append((index, b"".join(got)))
            self._current = None

    def send_reject(self, cid, index, why):
        self.rejects.append((index, why))


def block_data(index: int, size: int) -> bytes:
    return bytes([index % 251]) * size


def scheduler(clock: Clock, rate: int = 0, per_peer: int = 0, block: int = MiB) -> UploadScheduler:
    def read_blocks(requests):
        return defer.succeed([(block_data(i, block), []) for _cid, i in requests])

    return UploadScheduler(
        clock=clock,
        limiter=RateLimiter(rate, per_peer, now=clock.seconds),
        read_blocks=read_blocks,
    )


def run(clock: Clock, seconds: float, step: float = 0.001) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def test_a_limit_holds_within_a_slice_even_with_blocks_bigger_than_a_seconds_worth():
    """200 KB/s with 1 MiB blocks: every 10 s window within 10 %, and every block intact."""
    clock = Clock()
    uploads = scheduler(clock, rate=200_000)
    peer = FakeRequester(clock, "a")
    for i in range(40):
        uploads.request(peer, "cid", i, False)
    run(clock, 60)
    rates = window_rates(peer.parts, 60)
    assert len(rates) > 150
    for measured in rates:
        assert abs(measured - 200_000) <= 0.10 * 200_000, measured
    assert max(n for _t, n in peer.parts) == 16 * KiB  # 1/20 s of 200 KB/s, at the floor
    assert [i for i, _ in peer.blocks] == list(range(len(peer.blocks)))
    assert all(data == block_data(i, MiB) for i, data in peer.blocks)


def test_peers_share_a_global_limit_fairly():
    clock = Clock()
    uploads = scheduler(clock, rate=2 * MB)
    a, b = FakeRequester(clock, "a"), FakeRequester(clock, "b")
    for i in range(60):
        uploads.request(a, "cid", i, False)
        uploads.request(b, "cid", i, False)
    run(clock, 20)
    sent_a, sent_b = (sum(n for _t, n in p.parts) for p in (a, b))
    assert abs((sent_a + sent_b) / 20 - 2 * MB) <= 0.10 * 2 * MB
    assert 0.8 < sent_a / sent_b < 1.25


def test_per_peer_limit_paces_each_peer():
    clock = Clock()
    uploads = scheduler(clock, per_peer=300_000)
    a, b = FakeRequester(clock, "a"), FakeRequester(clock, "b")
    for i in range(30):
        uploads.request(a, "cid", i, False)
        uploads.request(b, "cid", i, False)
    run(clock, 30)
    for peer in (a, b):
        for measured in window_rates(peer.parts, 30):
            assert abs(measured - 300_000) <= 0.10 * 300_000, measured


def test_without_limits_whole_blocks_go_at_once():
    clock = Clock()
    uploads = scheduler(clock)
    peer = FakeRequester(clock, "a")
    for i in range(20):
        uploads.request(peer, "cid", i, False)
    assert len(peer.blocks) == 20 and all(n == MiB for _t, n in peer.parts)


def test_a_peer_that_goes_away_mid_block_is_dropped():
    clock = Clock()
    uploads = scheduler(clock, rate=100_000)
    peer = FakeRequester(clock, "a")
    for i in range(3):
        uploads.request(peer, "cid", i, False)
    run(clock, 2)
    uploads.forget(peer)
    sent = len(peer.parts)
    assert 0 < sent < 3 * MiB // MIN_SLICE  # it was cut off mid-transfer
    run(clock, 5)
    assert len(peer.parts) == sent
    assert not [call for call in clock.getDelayedCalls() if call.active()]


class Host:
    """The little of the files host a serving stream needs here."""

    def __init__(self) -> None:
        self.scheduler = None


def test_records_sent_during_a_paced_body_wait_for_it_to_end():
    """A reject sent while a block's body is half out is held, so framing stays whole."""
    stream = ServingStream(Host(), "peer")
    transport = StringTransport()
    stream.makeConnection(transport)
    body = bytes(range(256)) * 512  # 128 KiB
    stream.start_block("cid", 7, len(body), [b"p" * 32])
    stream.send_block_part(body[:50_000])
    stream.send_reject("cid", 9, "busy")
    stream.send_block_part(body[50_000:])
    records = RecordDecoder(max_body=1 << 20).feed(transport.value())
    assert [(r.header["t"], r.header["i"]) for r in records] == [("block", 7), ("reject", 9)]
    assert records[0].body == body and records[0].header["proof"] == [b"p" * 32]
