"""
The storage provider across real ``twistd -n peerd`` processes: a client
and six storage peers on 127.0.0.1, K=3 N=6.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from harness import PEERCTL, Cluster, Peer, child_env, wait_until

from peerd.providers.storage.share_files import CorruptShare, verify_file

SERVERS = 6
CONNECT_TIMEOUT = 20.0
MARKER = b"PEERD-STORAGE-PLAINTEXT-MARKER:"
STORAGE = {"provider:storage": {"segment_size": "256KiB", "min_free_disk": "0"}}


def start_grid(cluster: Cluster, quotas: dict[int, str] | None = None) -> tuple[Peer, list[Peer]]:
    """Six storage peers and a client connected to all of them."""
    servers = []
    for i in range(SERVERS):
        sections = {"provider:storage": dict(STORAGE["provider:storage"])}
        if quotas and i in quotas:
            sections["provider:storage"]["quota"] = quotas[i]
        servers.append(cluster.add(f"s{i}", sections=sections))
    client = cluster.add("client", peers=[s.address for s in servers], sections=STORAGE)
    cluster.start(*servers, client)
    wait_until(
        lambda: sum("storage" in p["providers"] for p in client.peers().values()) == SERVERS,
        CONNECT_TIMEOUT,
        "the client to connect to six storage peers",
    )
    return client, servers


def sample(path: Path, size: int) -> bytes:
    """Random bytes with a recognisable marker every 64 KiB."""
    chunks = []
    for _ in range(0, size, 65536):
        chunks.append(MARKER + os.urandom(65536 - len(MARKER)))
    data = b"".join(chunks)[:size]
    path.write_bytes(data)
    return data


def store(client: Peer, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return client.run_peerctl(
        "store", str(path), "--needed", "3", "--total", "6", *extra, json_output=False, timeout=60
    )


def retrieve(client: Peer, cap: str, out: Path) -> subprocess.CompletedProcess[str]:
    return client.run_peerctl(
        "retrieve", cap, "-o", str(out), "--force", json_output=False, timeout=60
    )


def share_files(peer: Peer) -> list[Path]:
    root = peer.data_dir / "providers" / "storage" / "shares"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.isdigit())


def holders(servers: list[Peer]) -> list[Peer]:
    return [s for s in servers if share_files(s)]


def test_store_survives_three_peers_and_servers_cannot_read(cluster: Cluster) -> None:
    """
    Store 3-of-6 on six peers; no server's data dir holds the plaintext; with
    three peers stopped the file comes back byte-exact; with a fourth
    stopped, retrieve fails with "found 2 of the 3 shares needed".
    """
    client, servers = start_grid(cluster)
    src = cluster.root / "source.bin"
    data = sample(src, 3 * 1024 * 1024 + 123)
    stored = store(client, src)
    assert stored.returncode == 0, stored.stderr
    cap = stored.stdout.strip()
    assert cap.startswith("pdcap1-")
    assert len(holders(servers)) == SERVERS
    for server in servers:
        for path in server.data_dir.rglob("*"):
            if path.is_file() and not path.is_socket():
                content = path.read_bytes()
                assert MARKER not in content, path
                assert cap.encode() not in content, path
    storage = client.peerctl("check", cap)["check"]
    assert storage["healthy"] and storage["good_shares"] == SERVERS

    for server in servers[:3]:
        server.stop()
    out = cluster.root / "out.bin"
    got = retrieve(client, cap, out)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data

    servers[3].stop()
    out.unlink()
    failed = retrieve(client, cap, out)
    assert failed.returncode != 0
    assert "found 2 of the 3 shares needed" in failed.stderr
    assert not out.exists()


def test_corrupt_share_on_disk_is_skipped_and_reported(cluster: Cluster) -> None:
    """Flip bytes inside share 0 on its server's disk: retrieve succeeds and names it."""
    client, servers = start_grid(cluster)
    src = cluster.root / "source.bin"
    data = sample(src, 1024 * 1024)
    stored = store(client, src)
    assert stored.returncode == 0, stored.stderr
    cap = stored.stdout.strip()
    [share0] = [p for s in servers for p in share_files(s) if p.name == "0"]
    raw = bytearray(share0.read_bytes())
    raw[1000] ^= 0x55
    share0.write_bytes(bytes(raw))
    out = cluster.root / "out.bin"
    got = retrieve(client, cap, out)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    assert "skipped corrupt share 0" in got.stderr
    repaired = client.run_peerctl("repair", cap, json_output=False, timeout=60)
    assert repaired.returncode == 0, repaired.stderr


def test_full_quota_goes_elsewhere_or_fails_clearly(cluster: Cluster) -> None:
    """A peer with a 1KiB quota refuses: 3-of-6 fails naming the quota; 3-of-5 succeeds without it."""
    client, servers = start_grid(cluster, quotas={0: "1KiB"})
    src = cluster.root / "source.bin"
    sample(src, 512 * 1024)
    failed = store(client, src)
    assert failed.returncode != 0
    assert "quota" in failed.stderr and "could not place 1 of 6 shares" in failed.stderr
    ok = client.run_peerctl(
        "store", str(src), "--needed", "3", "--total", "5", json_output=False, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert share_files(servers[0]) == []
    assert servers[0].peerctl("storage")["refused"] >= 1


def test_kill_9_during_store_leaves_no_damaged_share(cluster: Cluster) -> None:
    """
    SIGKILL a storage peer in the middle of a store and restart it: it holds
    no half share (nothing in incoming/, every share file verifies), and
    what it serves checks out.
    """
    client, servers = start_grid(cluster)
    src = cluster.root / "big.bin"
    sample(src, 48 * 1024 * 1024)
    process = subprocess.Popen(
        [str(PEERCTL), "--data-dir", str(client.data_dir), "store", str(src), "--total", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(client.home),
    )
    try:
        victim = servers[0]
        incoming = victim.data_dir / "providers" / "storage" / "incoming"
        wait_until(lambda: any(incoming.glob("*.tmp")), 30, "a share being written")
        time.sleep(0.2)
        victim.kill()
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    victim.start().wait_ready()
    assert not list(incoming.glob("*"))
    for path in share_files(victim):
        try:
            verify_file(path)
        except CorruptShare as e:  # pragma: no cover - the failure we test for
            raise AssertionError(f"damaged share served after kill -9: {e}") from None
    assert victim.peerctl("storage")["shares"] == len(share_files(victim))
