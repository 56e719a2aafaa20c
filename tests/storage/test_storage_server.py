"""The storage server's core: quota accounting, refusals, leases and their expiry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from peerd.providers.storage.codec import Layout, SegmentEncoder
from peerd.providers.storage.server import Space, StorageServer

SI = "00112233445566778899aabbccddeeff"
OWNER = "ab" * 16
DAY = 86400.0


def _sync(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    return defer.maybeDeferred(function, *args, **kwargs)


def _server(tmp_path: Path, clock: Clock, quota: int = 10_000, free: int = 10**12) -> StorageServer:
    server = StorageServer(
        tmp_path,
        clock=clock,
        run_in_thread=_sync,
        quota=quota,
        max_share_size=5000,
        min_free_disk=1000,
        max_lease=365 * DAY,
        disk_free=lambda: free,
    )
    _run(server.load())
    return server


def _run(coro):  # type: ignore[no-untyped-def]
    d = defer.Deferred.fromCoroutine(coro)
    box: list = []
    d.addBoth(box.append)
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def _store(server: StorageServer, si: str = SI, secret: bytes = b"s" * 32, days: float = 31) -> int:
    layout = Layout(300, 1, 2, 256)
    enc = SegmentEncoder(os.urandom(32), layout)
    data = os.urandom(300)
    blocks = [enc.encode(data[:256]), enc.encode(data[256:])]
    ueb = enc.finish()
    alloc = _run(server.allocate(si, [0], 2000, OWNER, secret, days * DAY))
    assert alloc.refused is None
    writer = alloc.writers[0]
    for s, row in enumerate(blocks):
        writer.write_block(s, row[0])
    return _run(server.commit(writer, ueb.encode(), b"".join(enc.hashes[0])))


def test_space_accounting() -> None:
    """Reservations count against the quota until committed (at the actual size) or released."""
    space = Space(1000)
    assert space.reserve(600) and not space.reserve(500)
    space.commit(600, 550)
    assert (space.used, space.reserved, space.available) == (550, 0, 450)
    assert space.reserve(450) and space.available == 0
    space.release(450)
    space.freed(550)
    assert space.available == 1000


def test_store_accounts_and_survives_restart(tmp_path: Path) -> None:
    """A committed share counts its real size; a new server on the same dir sees it."""
    clock = Clock()
    server = _server(tmp_path, clock)
    size = _store(server)
    assert server.space.used == size and server.space.reserved == 0
    again = _server(tmp_path, clock)
    assert again.space.used == size and again.held(SI) == [0]
    status = again.status()
    assert status["owners"][OWNER] == {"indexes": 1, "shares": 1, "bytes": size}


def test_quota_refusal_is_logged_with_its_key(tmp_path: Path) -> None:
    """Over the quota, an allocation is refused whole and the log names [provider:storage] quota."""
    server = _server(tmp_path, Clock(), quota=3000)
    with capturedLogs() as events:
        alloc = _run(server.allocate(SI, [0, 1], 2000, OWNER, b"s" * 32, DAY))
    assert alloc.refused is not None and alloc.refused.startswith("quota")
    assert not alloc.writers and server.space.reserved == 0
    assert any(
        "[provider:storage] quota" in str(e.get("log_format", "")).format(**e) for e in events
    )


def test_min_free_disk_and_max_share_size(tmp_path: Path) -> None:
    """Refused when the disk would drop under min_free_disk, or a share is over max_share_size."""
    server = _server(tmp_path, Clock(), free=2500)
    alloc = _run(server.allocate(SI, [0], 2000, OWNER, b"s" * 32, DAY))
    assert alloc.refused is not None and "min_free_disk" in alloc.refused
    alloc = _run(server.allocate(SI, [0], 6000, OWNER, b"s" * 32, DAY))
    assert alloc.refused is not None and "max_share_size" in alloc.refused


def test_abort_releases_the_reservation(tmp_path: Path) -> None:
    """A share thrown away gives its reservation back and leaves no file."""
    server = _server(tmp_path, Clock())
    alloc = _run(server.allocate(SI, [0], 2000, OWNER, b"s" * 32, DAY))
    assert server.space.reserved == 2000
    _run(server.abort(alloc.writers[0]))
    assert server.space.reserved == 0
    assert not list((tmp_path / "incoming").iterdir())


def test_lease_expiry_with_a_clock(tmp_path: Path) -> None:
    """Shares live until their last lease expires; then GC deletes them and frees the space."""
    clock = Clock()
    server = _server(tmp_path, clock)
    _store(server, days=2)
    clock.advance(1.5 * DAY)
    assert _run(server.collect()) == 0 and server.held(SI) == [0]
    clock.advance(DAY)
    assert _run(server.collect()) == 1
    assert server.held(SI) == [] and server.space.used == 0
    assert not (tmp_path / "shares" / SI[:2] / SI).exists()


def test_only_the_secret_holder_renews_or_cancels(tmp_path: Path) -> None:
    """Renew and cancel need the lease's secret; the server stores only its hash."""
    clock = Clock()
    server = _server(tmp_path, clock)
    _store(server, secret=b"a" * 32, days=2)
    assert not _run(server.renew(SI, b"b" * 32, 30 * DAY))
    assert not _run(server.cancel(SI, b"b" * 32))
    assert _run(server.renew(SI, b"a" * 32, 30 * DAY))
    lease_file = (tmp_path / "shares" / SI[:2] / SI / "leases").read_bytes()
    assert b"a" * 32 not in lease_file
    clock.advance(10 * DAY)
    assert _run(server.collect()) == 0
    assert _run(server.cancel(SI, b"a" * 32))
    assert server.held(SI) == [] and server.space.used == 0


def test_lease_is_capped_by_max_lease(tmp_path: Path) -> None:
    """A lease asked for longer than max_lease gets max_lease."""
    clock = Clock()
    server = _server(tmp_path, clock)
    _store(server, days=5000)
    clock.advance(366 * DAY)
    assert _run(server.collect()) == 1


@pytest.mark.parametrize("si", ["../" + SI[3:], SI.upper(), "x" * 32])
def test_hostile_index_is_rejected(tmp_path: Path, si: str) -> None:
    """A storage index that is not 32 lowercase hex digits never reaches the disk."""
    server = _server(tmp_path, Clock())
    with pytest.raises(ValueError):
        _run(server.allocate(si, [0], 100, OWNER, b"s" * 32, DAY))
