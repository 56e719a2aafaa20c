"""Three real peers on 127.0.0.1 find each other and agree on who is who."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
from harness import REPO_ROOT, Cluster, Peer, wait_until

CONNECT_TIMEOUT = 20.0


def fully_connected(peers: list[Peer]) -> bool:
    """Every peer lists every other one, with its PeerID."""
    for peer in peers:
        others = {p.peer_id for p in peers if p is not peer}
        if set(peer.peers()) != others:
            return False
    return True


def check_network(peers: list[Peer]) -> None:
    """Peers, status and providers agree across the (connected) network."""
    offers = {
        p.peer_id: {name: info["version"] for name, info in p.peerctl("providers")["local"].items()}
        for p in peers
    }
    for peer in peers:
        others = {p.peer_id for p in peers if p is not peer}
        listed = peer.peers()
        assert set(listed) == others
        for peer_id, info in listed.items():
            assert info["providers"] == offers[peer_id]
            assert info["direction"] in ("inbound", "outbound")
        status = peer.status()
        assert status["peer_id"] == peer.peer_id
        assert status["connections"]["total"] == len(peers) - 1
        providers = peer.peerctl("providers")
        assert providers["peers"] == {peer_id: offers[peer_id] for peer_id in others}
        assert status["providers"] == providers["local"]


def test_three_peers_connect(cluster: Cluster) -> None:
    """
    B lists A and C lists A and B by bare ``127.0.0.1:PORT``: all three end up
    connected to the other two with the PeerIDs ``peerctl id`` reports,
    ``status`` counts two connections each, and ``providers`` shows what each
    peer offers.  Prints the time from the first start to the full network.
    """
    a = cluster.add("a")
    b = cluster.add("b", peers=[a.address])
    c = cluster.add("c", peers=[a.address, b.address])
    started = time.monotonic()
    cluster.start(a, b, c)
    assert len({a.peer_id, b.peer_id, c.peer_id}) == 3
    wait_until(lambda: fully_connected([a, b, c]), CONNECT_TIMEOUT, "a fully connected network")
    elapsed = time.monotonic() - started
    print(f"\n3-peer network (generated configs) connected {elapsed:.2f}s after the first start")
    check_network([a, b, c])
    # B dialed A; C dialed A and B: the directions follow the config.
    assert b.peers()[a.peer_id]["direction"] == "outbound"
    assert a.peers()[b.peer_id]["direction"] == "inbound"
    assert c.peers()[b.peer_id]["direction"] == "outbound"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_conf_local_network(cluster: Cluster, tmp_path: Path) -> None:
    """
    The repository's ``conf/local/peer-*.ini``, copied unchanged into a
    temporary directory (so their relative ``data_dir`` lands there), form a
    connected three-peer network.
    """
    ports = (7851, 7852, 7853)
    busy = [port for port in ports if not _port_free(port)]
    if busy:
        pytest.skip(f"conf/local uses fixed ports and {busy} are in use")
    conf = tmp_path / "conf" / "local"
    conf.mkdir(parents=True)
    peers = []
    for name, port in zip("abc", ports, strict=True):
        config = conf / f"peer-{name}.ini"
        shutil.copyfile(REPO_ROOT / "conf" / "local" / config.name, config)
        peer = Peer(
            name,
            tmp_path / "logs",
            port=port,
            config_file=config,
            data_dir=conf / "data" / name,
            home=tmp_path,
        )
        peers.append(cluster.adopt(peer))
    started = time.monotonic()
    cluster.start(*peers)
    wait_until(lambda: fully_connected(peers), CONNECT_TIMEOUT, "conf/local to connect")
    elapsed = time.monotonic() - started
    print(f"\n3-peer network (conf/local) connected {elapsed:.2f}s after the first start")
    check_network(peers)
    for peer, port in zip(peers, ports, strict=True):
        assert peer.status()["listen"] == [f"tcp:{port}:interface=127.0.0.1"]
        assert (conf / "data" / peer.name / "identity.key").exists()
