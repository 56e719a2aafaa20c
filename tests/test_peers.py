"""PeerManager: duplicates, limits, allow list, redialing with backoff, shutdown, observers."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from peerd.identity import Identity
from peerd.net.connection import ConnectionSettings
from peerd.net.manager import ConnectionLimitReached, NetworkPolicy, PeerManager, survivor
from peerd.peerid import PeerAddress, PeerID
from peerd.testing import MemoryNetwork
from peerd.wire.messages import Hello


def _results(d):
    """Collect a Deferred's outcome in a list (empty while it has not fired)."""
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def net(tmp_path) -> MemoryNetwork:
    return MemoryNetwork(data_dir=tmp_path)


# -- survivor ----------------------------------------------------------------------------


@dataclass
class FakeConnection:
    """What ``survivor`` looks at: who dialed, whom to, and the dialer's nonce."""

    initiator: bool
    peer_id: PeerID
    connection_nonce: bytes
    name: str
    via: PeerID | None = None


LOW, HIGH = PeerID(b"\x01" * 20), PeerID(b"\xfe" * 20)


def _both_views(dialers_and_nonces):
    """The same physical connections as seen from LOW's side and from HIGH's side."""
    low_view, high_view = [], []
    for i, (dialer, nonce) in enumerate(dialers_and_nonces):
        low_view.append(FakeConnection(dialer is LOW, HIGH, nonce, f"c{i}"))
        high_view.append(FakeConnection(dialer is HIGH, LOW, nonce, f"c{i}"))
    return low_view, high_view


@pytest.mark.parametrize(
    "connections",
    [
        [(LOW, b"\x09"), (HIGH, b"\x01")],
        [(HIGH, b"\x01"), (LOW, b"\x09")],
        [(LOW, b"\x05"), (LOW, b"\x02")],
        [(HIGH, b"\x05"), (HIGH, b"\x02")],
    ],
)
def test_survivor_is_the_same_on_both_sides(connections):
    """Given the same two connections, both peers keep the same one, whatever the order."""
    low_view, high_view = _both_views(connections)
    kept = {
        survivor(LOW, *low_view).name,
        survivor(LOW, *reversed(low_view)).name,
        survivor(HIGH, *high_view).name,
        survivor(HIGH, *reversed(high_view)).name,
    }
    assert len(kept) == 1


def test_survivor_prefers_the_smaller_dialer_then_the_smaller_nonce():
    """The connection dialed by the smaller PeerID wins; same dialer: the smaller nonce."""
    low_view, _ = _both_views([(HIGH, b"\x00"), (LOW, b"\xff")])
    assert survivor(LOW, *low_view).name == "c1"
    low_view, _ = _both_views([(LOW, b"\x05"), (LOW, b"\x02")])
    assert survivor(LOW, *low_view).name == "c1"


# -- duplicates, limits, allow ------------------------------------------------------------


def test_simultaneous_dials_leave_one_shared_connection(net):
    """Two peers dialing each other at once end with one session each, on the same connection."""
    a, b = net.add_peer(), net.add_peer()
    from_a, from_b = _results(net.connect(a, b)), _results(net.connect(b, a))
    net.flush()

    assert list(a.manager.sessions) == [b.peer_id] and list(b.manager.sessions) == [a.peer_id]
    kept_a, kept_b = a.session(b), b.session(a)
    assert kept_a.connection_nonce == kept_b.connection_nonce
    assert any(
        {link.client_connection, link.server_connection} == {kept_a, kept_b} for link in net.links
    )
    assert from_a == [kept_a] and from_b == [kept_b]
    assert a.manager.connection_count == 1 and b.manager.connection_count == 1


def test_max_connections_refuses_inbound_beyond_the_limit(net):
    """A peer at max_connections refuses another inbound peer with too-many-connections."""
    hub = net.add_peer(policy=NetworkPolicy(max_connections=1))
    first, second = net.add_peer(), net.add_peer()
    net.connect(first, hub)
    net.flush()
    with capturedLogs() as events:
        refused = _results(net.connect(second, hub))
        net.flush()
    assert refused[0].check(ConnectionLost)
    assert "too-many-connections" in refused[0].getErrorMessage()
    assert list(hub.manager.sessions) == [first.peer_id]
    assert second.manager.sessions == {}
    assert any("[network] max_connections" in formatEvent(e) for e in events)


def test_max_connections_refuses_to_dial_beyond_the_limit(net):
    """A peer at max_connections does not dial; the error names the config key."""
    a = net.add_peer(policy=NetworkPolicy(max_connections=1))
    b, c = net.add_peer(), net.add_peer()
    net.connect(a, b)
    net.flush()
    outcome = _results(net.connect(a, c))
    assert outcome[0].check(ConnectionLimitReached)
    assert "[network] max_connections" in outcome[0].getErrorMessage()
    assert net.link(a, b) and all(c not in (link.dialer, link.listener) for link in net.links)


def test_allow_list_refuses_other_peers(net):
    """With an allow list, only the listed peers may connect; others get not-allowed."""
    friend, stranger = net.add_peer(), net.add_peer()
    guarded = net.add_peer(policy=NetworkPolicy(allow=frozenset({friend.peer_id})))
    refused = _results(net.connect(stranger, guarded))
    accepted = _results(net.connect(friend, guarded))
    net.flush()
    assert refused[0].check(ConnectionLost) and "not-allowed" in refused[0].getErrorMessage()
    assert accepted == [friend.session(guarded)]
    assert list(guarded.manager.sessions) == [friend.peer_id]


def test_dialing_yourself_is_refused(net):
    """A peer will not dial its own PeerID, nor keep a connection that reaches itself."""
    a = net.add_peer()
    pinned = _results(net.connect(a, a))
    assert pinned[0].check(ValueError)
    unpinned = _results(net.connect(a, a, pinned=False))
    net.flush()
    assert unpinned[0].check(ConnectionLost)
    assert a.manager.sessions == {} and a.manager.connection_count == 0


# -- KeepConnected --------------------------------------------------------------------------


def _manager(clock, dial, policy):
    identity = Identity.generate()
    return PeerManager(
        local_peer_id=identity.peer_id,
        clock=clock,
        settings=ConnectionSettings(),
        policy=policy,
        dial=dial,
        hello=lambda: Hello(peer_id=str(identity.peer_id), agent="test"),
        route_stream=lambda stream: stream.reset("no providers"),
        rng=random.Random(0),
    )


def test_keep_connected_backs_off_exponentially_up_to_backoff_max():
    """Failed dials are retried after 2^n * backoff_initial (+ jitter), capped at backoff_max."""
    clock = Clock()
    dials: list[float] = []

    def dial(address, connection):
        dials.append(clock.seconds())
        return defer.fail(ConnectionRefusedError("nobody home"))

    manager = _manager(clock, dial, NetworkPolicy(backoff_initial=1.0, backoff_max=10.0))
    manager.keep_connected([PeerAddress.parse(f"{Identity.generate().peer_id}@10.0.0.9:7845")])
    jitter = random.Random(0)
    expected = []
    for failures in range(1, 7):
        expected.append(min(2.0**failures, 10.0) + jitter.random())
        (call,) = clock.getDelayedCalls()
        assert call.getTime() - clock.seconds() == pytest.approx(expected[-1])
        clock.advance(call.getTime() - clock.seconds())
    assert len(dials) == 7
    gaps = [later - earlier for earlier, later in zip(dials, dials[1:], strict=False)]
    assert gaps == pytest.approx(expected)
    assert max(gaps) < 10.0 + 1.0 and gaps[-1] >= 10.0


def test_keep_connected_redials_after_the_session_ends(net):
    """A kept peer whose session ends is dialed again after the initial backoff."""
    a, b = net.add_peer(rng=random.Random(0)), net.add_peer()
    a.manager.keep_connected([b.address])
    net.flush()
    first = a.session(b)
    assert first is not None
    b.session(a).close("restart", "going away for a moment")
    net.flush()
    assert a.session(b) is None
    net.advance(NetworkPolicy().backoff_initial + 1.0)  # initial delay plus at most 1s jitter
    assert a.session(b) is not None and a.session(b) is not first


def test_keep_connected_retries_until_the_peer_accepts(net):
    """A kept peer that refuses at first is connected once it accepts."""
    a, b = net.add_peer(rng=random.Random(0)), net.add_peer()
    b.accepting = False
    a.manager.keep_connected([b.address])
    net.advance(10)
    assert a.session(b) is None
    b.accepting = True
    net.advance(20)
    assert a.session(b) is not None


# -- stop, observers ---------------------------------------------------------------------------


def test_stop_says_goaway_shutdown_on_every_connection(net):
    """stop() closes every connection with GOAWAY shutdown and fires once they are closed."""
    a, b, c = net.add_peer(), net.add_peer(), net.add_peer()
    net.connect(a, b)
    net.connect(c, a)
    net.flush()
    seen_by_b, seen_by_c = _results(b.session(a).closed), _results(c.session(a).closed)
    stopped = _results(a.manager.stop())
    net.flush()
    assert stopped == [None]
    assert a.manager.sessions == {} and a.manager.connection_count == 0
    assert seen_by_b == seen_by_c == ["peer said shutdown: the peer is shutting down"]
    refused = _results(net.connect(a, b))
    assert refused[0].check(ConnectionLimitReached)


class RecordingObserver:
    """An IPeerObserver that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def peer_connected(self, peer) -> None:
        self.events.append(("connected", peer.peer_id))

    def peer_disconnected(self, peer, reason: str) -> None:
        self.events.append(("disconnected", peer.peer_id, reason))


class RaisingObserver:
    """An IPeerObserver with bugs."""

    def peer_connected(self, peer) -> None:
        raise RuntimeError("observer bug")

    def peer_disconnected(self, peer, reason: str) -> None:
        raise RuntimeError("observer bug")


def test_observers_are_told_and_a_raising_one_breaks_nothing(net):
    """Observers hear of sessions starting and ending; one that raises is logged and skipped."""
    a, b = net.add_peer(), net.add_peer()
    before, after = RecordingObserver(), RecordingObserver()
    for observer in (before, RaisingObserver(), after):
        a.manager.add_observer(observer)
    with capturedLogs() as events:
        net.connect(a, b)
        net.flush()
        b.session(a).close("bye")
        net.flush()
    expected = [("connected", b.peer_id), ("disconnected", b.peer_id, "peer said bye")]
    assert before.events == expected and after.events == expected
    assert sum(1 for e in events if "observer" in formatEvent(e)) == 2
    a.manager.remove_observer(before)
    net.connect(a, b)
    net.flush()
    assert len(before.events) == 2 and len(after.events) == 3
