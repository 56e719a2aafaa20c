"""A peer is its PeerID: pinned dials check it, allow lists use it, restarts keep it."""

from __future__ import annotations

from harness import CLEAN_STOP_CODES, Cluster, wait_until

from peerd.identity import Identity


def test_pinning_allow_list_and_restart(cluster: Cluster) -> None:
    """
    Dialing ``WRONGID@host:port`` fails (non-zero exit, "expected ... got ..."
    in the error and in the dialer's log); the right ``PEERID@host:port``
    connects; a bare ``host:port`` connects and learns the PeerID.  Restarted
    with ``[network] allow`` naming only B, A keeps its PeerID, accepts B and
    refuses C's inbound connection.
    """
    a, b, c = cluster.add("a"), cluster.add("b"), cluster.add("c")
    cluster.start(a, b, c)
    a_id = a.peer_id

    wrong_id = str(Identity.generate().peer_id)
    result = b.run_peerctl("connect", f"{wrong_id}@{a.address}")
    assert result.returncode != 0
    assert "expected" in result.stderr and "got" in result.stderr, result.stderr
    assert wrong_id in result.stderr and a_id in result.stderr, result.stderr
    assert f"expected peer {wrong_id}, got {a_id}" in b.log_text()
    assert b.peers() == {}

    connected = b.peerctl("connect", a.pinned_address)["peer"]
    assert connected["peer_id"] == a_id
    assert connected["direction"] == "outbound"
    assert connected["address"] == a.address

    learned = c.peerctl("connect", a.address)["peer"]
    assert learned["peer_id"] == a_id
    assert set(c.peers()) == {a_id}
    wait_until(lambda: set(a.peers()) == {b.peer_id, c.peer_id}, 5, "A to list B and C")

    assert a.stop() in CLEAN_STOP_CODES
    wait_until(lambda: not b.peers() and not c.peers(), 10, "B and C to see A go")
    a.write_config(network={"allow": b.peer_id})
    a.forget_peer_id()
    cluster.start(a)
    assert a.peer_id == a_id, "the PeerID changed across a restart"

    assert b.peerctl("connect", a.pinned_address)["peer"]["peer_id"] == a_id
    refused = c.run_peerctl("connect", a.pinned_address)
    assert refused.returncode != 0, refused.stdout
    wait_until(lambda: "not in [network] allow" in a.log_text(), 5, "A to log the refusal")
    assert c.peer_id in a.log_text().split("not in [network] allow")[0].splitlines()[-1]
    assert set(a.peers()) == {b.peer_id}
    assert c.peers() == {}
