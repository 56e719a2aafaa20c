"""Starting, stopping, restarting and racing real peers."""

from __future__ import annotations

import time

import psutil
from harness import CLEAN_STOP_CODES, Cluster, wait_until


def test_sigterm_and_reconnect(cluster: Cluster) -> None:
    """
    SIGTERM stops A cleanly (exit status in CLEAN_STOP_CODES, shutdown
    logged) and B, which keeps A connected, sees A go; once A is restarted
    B reconnects on its own (short backoff) to the same PeerID.
    """
    a = cluster.add("a")
    b = cluster.add("b", peers=[a.address])
    cluster.start(a, b)
    a_id = a.peer_id
    first = wait_until(lambda: b.peers().get(a_id), 10, "B to connect to A")

    code = a.stop()
    assert code in CLEAN_STOP_CODES, f"exit status {code}\n{a.log_tail()}"
    assert "peerd stopped" in a.log_text()
    wait_until(lambda: a_id not in b.peers(), 5, "B to see A disconnect")
    assert f"disconnected from {a_id}" in b.log_text()

    cluster.start(a)
    again = wait_until(lambda: b.peers().get(a_id), 10, "B to reconnect to the restarted A")
    assert again["since"] > first["since"]
    assert again["direction"] == "outbound"
    assert b.status()["connections"]["total"] == 1


def connection_view(x, y) -> dict | None:
    """What ``x`` lists for ``y``, if it lists exactly ``y``."""
    peers = x.peers()
    return peers.get(y.peer_id) if len(peers) == 1 else None


def local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to 127.0.0.1:``remote_port``."""
    process = psutil.Process(pid)
    connections = process.net_connections("tcp")
    return {
        c.laddr.port
        for c in connections
        if c.raddr and c.raddr.port == remote_port and c.status == psutil.CONN_ESTABLISHED
    }


def test_simultaneous_dial_keeps_one(cluster: Cluster) -> None:
    """
    Two peers that list each other and start at the same moment end with
    exactly one connection, the same one seen from both sides (one outbound,
    one inbound, the address/port pairs matching the real socket), and it
    stays that way for a few seconds.
    """
    a = cluster.add("a")
    b = cluster.add("b")
    a.write_config(peers=[b.address])
    b.write_config(peers=[a.address])
    cluster.start(a, b)

    def settled() -> tuple[dict, dict] | None:
        ab, ba = connection_view(a, b), connection_view(b, a)
        if ab and ba and a.status()["connections"]["total"] == 1:
            return ab, ba
        return None

    def stable() -> tuple[dict, dict] | None:
        # A peer dialing a bare host:port does not know that the peer that
        # dialed it is the one at that address, so it may dial once more and
        # the duplicate rule then swaps connections: wait for a view that holds.
        views = settled()
        if views is None:
            return None
        time.sleep(1.0)
        return views if _same(settled(), *views) else None

    ab, ba = wait_until(stable, 15, "A and B to settle on one connection")
    assert {ab["direction"], ba["direction"]} == {"inbound", "outbound"}
    dialer, listener = (a, b) if ab["direction"] == "outbound" else (b, a)
    out_view, in_view = (ab, ba) if dialer is a else (ba, ab)
    assert out_view["address"] == listener.address
    host, port = in_view["address"].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) in local_ports_to(dialer.pid, listener.port)
    assert local_ports_to(listener.pid, dialer.port) == set(), "listener also dialed and kept it"

    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert _same(settled(), ab, ba), "the connection between A and B changed"
        time.sleep(0.5)


def _same(views: tuple[dict, dict] | None, ab: dict, ba: dict) -> bool:
    """The same connection (counters may move)."""
    if views is None:
        return False
    keys = ("peer_id", "address", "direction", "since")
    return all(views[0][k] == ab[k] and views[1][k] == ba[k] for k in keys)


def test_peerctl_without_daemon(cluster: Cluster) -> None:
    """``peerctl`` against a stopped daemon says so on stderr and exits non-zero."""
    a = cluster.add("a")
    cluster.start(a)
    assert a.stop() in CLEAN_STOP_CODES
    result = a.run_peerctl("status")
    assert result.returncode != 0
    assert result.stdout == ""
    socket_path = a.data_dir / "control.sock"
    assert f"peerd is not running (no control socket at {socket_path})" in result.stderr


def test_max_connections(cluster: Cluster) -> None:
    """
    With ``max_connections = 1``, A keeps B and refuses C's connection, and
    A's log names ``[network] max_connections``.
    """
    a = cluster.add("a", network={"max_connections": "1"})
    b, c = cluster.add("b"), cluster.add("c")
    cluster.start(a, b, c)
    b.peerctl("connect", a.pinned_address)
    refused = c.run_peerctl("connect", a.pinned_address)
    assert refused.returncode != 0, refused.stdout
    wait_until(lambda: "[network] max_connections" in a.log_text(), 5, "A to log the refusal")
    assert set(a.peers()) == {b.peer_id}
    assert a.status()["connections"] == {"total": 1, "inbound": 1, "outbound": 0, "max": 1}
    assert c.peers() == {}
