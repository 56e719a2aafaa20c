"""Store, retrieve, check, repair and renew over a MemoryNetwork of storage peers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_helpers import StorageNet
from zope.interface.verify import verifyObject

from peerd.interfaces import IResourceProvider, IResourceProviderFactory
from peerd.providers.storage import verify
from peerd.providers.storage.capability import Capability
from peerd.providers.storage.codec import UEB, share_root
from peerd.providers.storage.maintain import renew, repair
from peerd.providers.storage.plugin import StorageFactory
from peerd.providers.storage.retrieve import retrieve
from peerd.providers.storage.share_files import HASH, encode_trailer, read_info
from peerd.providers.storage.store import store
from peerd.testing import StreamRecorder
from peerd.wire.records import encode_record

DAY = 86400.0


def _store(s: StorageNet, tmp_path: Path, data: bytes, k: int = 3, n: int = 6, **kw: object):
    src = tmp_path / "source"
    src.write_bytes(data)
    job = s.finish(store(s.client.client, str(src), k, n, 31 * DAY, bool(kw.get("doubling"))))
    return job


def _retrieve(s: StorageNet, cap: str, out: Path):
    return s.finish(retrieve(s.client.client, Capability.parse(cap), str(out), False))


def test_plugin_and_provider_contracts(tmp_path: Path) -> None:
    """The factory and the provider provide their interfaces."""
    s = StorageNet(tmp_path, 1)
    verifyObject(IResourceProviderFactory, StorageFactory())
    verifyObject(IResourceProvider, s.client)


def test_store_and_retrieve_with_three_of_six_peers_gone(tmp_path: Path) -> None:
    """K=3 N=6 on 6 peers: one share each; with 3 peers gone the file comes back byte-exact."""
    s = StorageNet(tmp_path, 6)
    data = os.urandom(50_000)
    job = _store(s, tmp_path, data)
    assert job.state == "complete", job.error
    result = job.result
    assert result["peers"] == 6 and len(result["placements"]) == 6
    for server in s.servers:
        assert len(s.share_files(server)) == 1
    for server in s.servers[:3]:
        s.disconnect(server)
    out = tmp_path / "out"
    got = _retrieve(s, result["capability"], out)
    assert got.state == "complete", got.error
    assert out.read_bytes() == data
    assert got.result["corrupt"] == [] and got.result["verified"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_fewer_than_k_shares_gives_the_clear_message(tmp_path: Path) -> None:
    """With 4 of 6 peers gone: "found 2 of the 3 shares needed", naming what was asked."""
    s = StorageNet(tmp_path, 6)
    job = _store(s, tmp_path, os.urandom(10_000))
    for server in s.servers[:4]:
        s.disconnect(server)
    out = tmp_path / "out"
    got = _retrieve(s, job.result["capability"], out)
    assert got.state == "failed"
    assert "found 2 of the 3 shares needed" in got.error
    assert "asked 2 storage peers" in got.error
    assert not out.exists()


def test_corrupt_share_is_skipped_and_reported(tmp_path: Path) -> None:
    """A share damaged on a server's disk is refused by that server; retrieve succeeds and reports it."""
    s = StorageNet(tmp_path, 6)
    data = os.urandom(30_000)
    job = _store(s, tmp_path, data)
    # damage share 0 (the first one retrieve asks for)
    for server in s.servers:
        for path in s.share_files(server):
            if path.name == "0":
                raw = bytearray(path.read_bytes())
                raw[5] ^= 0xFF
                path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    got = _retrieve(s, job.result["capability"], out)
    assert got.state == "complete", got.error
    assert out.read_bytes() == data
    assert [c["share"] for c in got.result["corrupt"]] == [0]
    assert "corrupt" in got.result["corrupt"][0]["why"]


def test_lying_server_is_caught_by_the_client(tmp_path: Path) -> None:
    """A share rewritten to be self-consistent (new blocks, hashes, UEB, footer) passes
    the server's own checks but not the capability: the client skips and reports it."""
    s = StorageNet(tmp_path, 6)
    data = os.urandom(9_000)
    job = _store(s, tmp_path, data)
    for server in s.servers:
        for path in s.share_files(server):
            if path.name == "1":
                _forge(path)
                server.providers["storage"].server.files.forget(path.parent.name)
    out = tmp_path / "out"
    got = _retrieve(s, job.result["capability"], out)
    assert got.state == "complete", got.error
    assert out.read_bytes() == data
    assert [c["share"] for c in got.result["corrupt"]] == [1]
    assert "UEB does not match" in got.result["corrupt"][0]["why"]


def _forge(path: Path) -> None:
    """Replace block 0 with zeros and fix up every hash so the file checks out on its own."""
    from peerd.providers.storage.codec import block_hash

    info = read_info(path)
    raw = path.read_bytes()
    blocks = bytearray(raw[: info.blocks_len])
    _, length = info.block_offset(0)
    blocks[:length] = bytes(length)
    hashes = block_hash(info.shnum, 0, bytes(length)) + info.hashes[HASH:]
    ueb = UEB.decode(info.ueb)
    roots = list(ueb.roots)
    roots[info.shnum] = share_root(info.shnum, hashes)
    forged = UEB(ueb.layout, tuple(roots), ueb.crypttext_hash).encode()
    path.write_bytes(bytes(blocks) + encode_trailer(info.shnum, info.blocks_len, forged, hashes))
    read_info(path)  # self-consistent


def test_not_enough_peers_without_doubling(tmp_path: Path) -> None:
    """K=3 N=6 on 4 peers fails saying how many storage peers it found and what it would take."""
    s = StorageNet(tmp_path, 4)
    job = _store(s, tmp_path, b"x" * 1000)
    assert job.state == "failed"
    assert "found 4 storage peers" in job.error and "needs 6 distinct storage peers" in job.error
    assert "--allow-doubling" in job.error


def test_doubling_places_several_shares_per_peer(tmp_path: Path) -> None:
    """With --allow-doubling, 6 shares go on 4 peers and the data comes back."""
    s = StorageNet(tmp_path, 4)
    data = os.urandom(5000)
    job = _store(s, tmp_path, data, doubling=True)
    assert job.state == "complete", job.error
    assert sorted(len(s.share_files(p)) for p in s.servers) == [1, 1, 2, 2]
    out = tmp_path / "out"
    assert _retrieve(s, job.result["capability"], out).state == "complete"
    assert out.read_bytes() == data


def test_full_server_is_skipped(tmp_path: Path) -> None:
    """A peer whose quota is full refuses; its share goes to a spare peer."""
    s = StorageNet(tmp_path, 7, server_configs={i: {"quota": "1KiB"} for i in (0, 1)})
    job = _store(s, tmp_path, os.urandom(20_000))
    assert job.state == "failed" or job.state == "complete"
    # 7 peers, 2 full: 5 can take a share, 6 are needed
    assert job.state == "failed"
    assert "quota" in job.error and "placed" not in job.error
    s2 = StorageNet(tmp_path / "b", 7, server_configs={0: {"quota": "1KiB"}})
    job = _store(s2, tmp_path, os.urandom(20_000))
    assert job.state == "complete", job.error
    assert s2.share_files(s2.servers[0]) == []
    placed_on = {p["peer"] for p in job.result["placements"]}
    assert str(s2.servers[0].peer_id) not in placed_on


def test_plaintext_never_reaches_a_server(tmp_path: Path) -> None:
    """No server's data dir holds the plaintext, the key or the capability."""
    s = StorageNet(tmp_path, 6)
    data = b"TOP SECRET PLAN " * 4000
    job = _store(s, tmp_path, data)
    cap = Capability.parse(job.result["capability"])
    for server in s.servers:
        for path in (s.provider(server).node.data_dir).rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert b"SECRET PLAN" not in content and cap.key not in content
                assert str(cap).encode() not in content


def test_check_and_repair(tmp_path: Path) -> None:
    """check lists holders; after 2 peers go, repair puts the missing shares on new peers."""
    s = StorageNet(tmp_path, 8)
    data = os.urandom(12_000)
    job = _store(s, tmp_path, data)
    cap = Capability.parse(job.result["capability"])
    client = s.client.client
    check = s.result(verify.check(client, cap, verify=True))
    assert check["healthy"] and check["good_shares"] == 6
    holders = {p["peer"] for p in job.result["placements"]}
    gone = [p for p in s.servers if str(p.peer_id) in holders][:2]
    for server in gone:
        s.disconnect(server)
    check = s.result(verify.check(client, cap))
    assert check["retrievable"] and not check["healthy"] and len(check["missing"]) == 2
    fixed = s.finish(repair(client, cap, 31 * DAY, False))
    assert fixed.state == "complete", fixed.error
    assert sorted(r["share"] for r in fixed.result["repaired"]) == check["missing"]
    check = s.result(verify.check(client, cap, verify=True))
    assert check["healthy"], check
    for server in [p for p in s.servers if p not in gone][:3]:
        s.disconnect(server)
    out = tmp_path / "out"
    assert _retrieve(s, str(cap), out).state == "complete"
    assert out.read_bytes() == data


def test_renew_extends_leases_and_expiry_collects(tmp_path: Path) -> None:
    """Shares outlive their first lease when renewed; without renewal, GC deletes them."""
    s = StorageNet(tmp_path, 6, config={"lease_gc_interval": "10s"})
    src = tmp_path / "source"
    src.write_bytes(os.urandom(3000))
    job = s.finish(store(s.client.client, str(src), 3, 6, 120.0, False))
    cap = Capability.parse(job.result["capability"])
    s.wait(60)
    renewed = s.result(renew(s.client.client, cap, 600.0))
    assert renewed["renewed"] == 6
    s.wait(300)
    assert all(len(s.share_files(p)) == 1 for p in s.servers)
    s.wait(400)
    assert all(s.share_files(p) == [] for p in s.servers)
    assert s.provider(s.servers[0]).server.status()["expired_collected"] == 1


def test_malformed_records_reset_only_that_stream(tmp_path: Path) -> None:
    """Garbage, an unknown request or a path-traversal index resets the stream; the server lives."""
    s = StorageNet(tmp_path, 1)
    server = s.servers[0]
    for header in (
        {"t": "nope", "id": 1},
        {"t": "list", "id": 1, "si": "../../etc"},
        {"t": "trailer", "id": 1, "si": "0" * 32, "sh": 999},
        {"t": "write", "id": 1, "sh": "x"},
        {"t": "list"},
    ):
        stream = s.client_peer.open_stream(server, "storage", StreamRecorder())
        stream.writeSequence(encode_record(header))
        s.net.flush()
        assert stream.protocol.lost is not None, header
    stream = s.client_peer.open_stream(server, "storage", StreamRecorder())
    stream.write(b"\xff" * 64)
    s.net.flush()
    assert stream.protocol.lost is not None
    assert s.client_peer.session(server) is not None
    job = _store(s, tmp_path, b"still fine", k=1, n=1)
    assert job.state == "complete", job.error


@pytest.mark.parametrize("size", [0, 1, 4096 * 3])
def test_edge_sizes(tmp_path: Path, size: int) -> None:
    """Empty files and exact multiples of the segment size round-trip."""
    s = StorageNet(tmp_path, 3)
    data = os.urandom(size)
    job = _store(s, tmp_path, data, k=2, n=3)
    out = tmp_path / "out"
    assert _retrieve(s, job.result["capability"], out).state == "complete"
    assert out.read_bytes() == data
