"""The batch scheduler, on a Clock: placement, work stealing, retries, quorum."""

from __future__ import annotations

from twisted.internet.task import Clock

from peerd.providers.compute.scheduler import (
    ACCEPTED,
    FAILED,
    LIAR,
    NO_PEERS,
    NO_QUORUM,
    Scheduler,
    quorum_for,
)


def make(jobs: int, replicas: int = 1, timeout: float = 60.0, **kw) -> tuple[Scheduler, Clock]:
    clock = Clock()
    return Scheduler(jobs, replicas, clock.seconds, timeout, **kw), clock


def kinds(scheduler: Scheduler) -> list[tuple]:
    return [(e.kind, e.job) for e in scheduler.take_events()]


def test_quorum_sizes() -> None:
    """One of one, both of two, a majority of three or more."""
    assert [quorum_for(r) for r in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_fills_each_peer_up_to_its_slots() -> None:
    """Every free slot gets a job, no more; jobs go out in order."""
    s, _ = make(10)
    s.add_peer("a", 2)
    s.add_peer("b", 3)
    started = s.assign()
    assert len(started) == 5
    assert sorted(a.job for a in started) == [0, 1, 2, 3, 4]
    assert sum(a.peer == "a" for a in started) == 2
    assert s.assign() == []


def test_fast_peer_takes_more() -> None:
    """A peer that finishes sooner pulls the next job: it ends up with more of the batch."""
    s, clock = make(20)
    s.add_peer("fast", 1)
    s.add_peer("slow", 1)
    running = {a.peer: a for a in s.assign()}
    done = {"fast": 0, "slow": 0}
    for tick in range(1, 200):
        clock.advance(1)
        for peer, every in (("fast", 1), ("slow", 4)):
            a = running.get(peer)
            if a is not None and tick % every == 0:
                s.completed(a, b"x")
                done[peer] += 1
                running.pop(peer)
        for a in s.assign():
            running[a.peer] = a
        if s.finished:
            break
    assert s.finished and s.accepted == 20
    assert done["fast"] >= 3 * done["slow"] - 2


def test_straggler_is_stolen_by_an_idle_peer_first_result_wins() -> None:
    """At the tail an idle peer duplicates a job running long on another; the loser is cancelled."""
    s, clock = make(2)
    s.add_peer("a", 1)
    s.add_peer("b", 1)
    first = {a.peer: a for a in s.assign()}
    clock.advance(1)
    s.completed(first["a"], b"x")  # a typical job takes 1 s
    clock.advance(5)  # b's job is now a straggler
    (steal,) = s.assign()
    assert steal.peer == "a" and steal.job == first["b"].job
    s.completed(steal, b"y")
    assert s.take_cancelled() == [first["b"]]
    assert s.finished and s.accepted == 2


def test_disconnected_peer_jobs_are_retried_elsewhere() -> None:
    """A peer that goes away loses its jobs to the others; the batch completes."""
    s, _ = make(4)
    s.add_peer("a", 2)
    s.add_peer("b", 2)
    started = s.assign()
    lost = [a for a in started if a.peer == "b"]
    s.remove_peer("b", "disconnected")
    assert set(s.take_cancelled()) == set(lost)
    for a in started:
        if a.peer == "a":
            s.completed(a, b"ok")
    again = s.assign()
    assert sorted(a.job for a in again) == sorted(a.job for a in lost)
    assert all(a.peer == "a" for a in again)
    for a in again:
        s.completed(a, b"ok")
    assert s.finished and s.accepted == 4


def test_timeouts_are_retried_and_bounded() -> None:
    """An assignment older than the timeout is cancelled and retried; attempts are bounded."""
    s, clock = make(1, timeout=10, max_attempts=2)
    s.add_peer("a", 1)
    s.add_peer("b", 1)
    (a1,) = s.assign()
    clock.advance(11)
    assert s.expire() == [a1]
    (a2,) = s.assign()
    assert a2.job == 0
    clock.advance(11)
    s.expire()
    assert s.finished
    assert kinds(s) == [(FAILED, 0)]


def test_refusal_takes_the_peer_out() -> None:
    """A peer refusing for good (allowance, not allowed) gets nothing more."""
    s, _ = make(3)
    s.add_peer("a", 1)
    s.add_peer("b", 1)
    started = {a.peer: a for a in s.assign()}
    s.failed(started["b"], "not-allowed", retry_peer=False)
    assert "b" in s.excluded
    assert all(a.peer == "a" for a in s.assign()) or s.assign() == []


def test_two_replicas_agree() -> None:
    """R = 2: a job runs on two distinct peers and is accepted when both digests match."""
    s, _ = make(1, replicas=2)
    s.add_peer("a", 4)
    s.add_peer("b", 4)
    started = s.assign()
    assert sorted(a.peer for a in started) == ["a", "b"]
    s.completed(started[0], b"d")
    assert not s.finished
    s.completed(started[1], b"d")
    assert kinds(s) == [(ACCEPTED, 0)]


def test_two_replicas_disagree_third_decides_and_liar_is_excluded() -> None:
    """R = 2 with a liar: a third replica breaks the tie; the liar is reported and gets no more."""
    s, _ = make(3, replicas=2)
    s.add_peer("honest", 1)
    s.add_peer("liar", 1)
    started = s.assign()
    s.add_peer("other", 1)
    job0 = [a for a in started if a.job == 0]
    assert sorted(a.peer for a in job0) == ["honest", "liar"]
    for a in job0:
        s.completed(a, b"lie" if a.peer == "liar" else b"true")
    (third,) = [a for a in s.assign() if a.job == 0]
    assert third.peer == "other"
    s.completed(third, b"true")
    events = s.take_events()
    assert [(e.kind, e.job) for e in events] == [(ACCEPTED, 0), (LIAR, 0)]
    assert events[0].winners == ("honest", "other")
    assert events[1].peer == "liar" and "liar" in s.liars
    assert all(a.peer != "liar" for a in s.assign() + s.running())


def test_three_replicas_majority() -> None:
    """R = 3: two agreeing results of three are enough; the odd one out is a liar."""
    s, _ = make(1, replicas=3)
    for peer in "abc":
        s.add_peer(peer, 1)
    started = {a.peer: a for a in s.assign()}
    s.completed(started["a"], 1)
    s.completed(started["b"], 2)
    s.completed(started["c"], 1)
    assert kinds(s) == [(ACCEPTED, 0), (LIAR, 0)]
    assert s.liars == {"b"}


def test_untrusted_disagreement_brands_nobody() -> None:
    """A resource-limit outcome that differs (a timeout on a slow peer) is no lie."""
    s, _ = make(1, replicas=3)
    for peer in "abc":
        s.add_peer(peer, 1)
    started = {a.peer: a for a in s.assign()}
    s.completed(started["a"], 1)
    s.completed(started["b"], "timeout", trusted=False)
    s.completed(started["c"], 1)
    assert kinds(s) == [(ACCEPTED, 0)]
    assert s.liars == set()


def test_no_quorum_with_too_few_peers() -> None:
    """Disagreeing results and no peer left to break the tie: the job fails with no-quorum."""
    s, _ = make(1, replicas=2)
    s.add_peer("a", 1)
    s.add_peer("b", 1)
    s.seal()
    a, b = s.assign()
    s.completed(a, 1)
    s.completed(b, 2)
    assert [(e.kind, e.reason) for e in s.take_events()] == [(FAILED, NO_QUORUM)]


def test_sealed_without_peers_fails_everything() -> None:
    """With no compute peer at all, the jobs fail at once (no-peers), not hang."""
    s, _ = make(2)
    s.seal()
    assert s.finished
    assert {e.reason for e in s.take_events()} == {NO_PEERS}


def test_done_jobs_are_skipped() -> None:
    """Resuming: jobs already done are not scheduled again."""
    s, _ = make(4, done=frozenset({0, 2}))
    s.add_peer("a", 4)
    assert sorted(a.job for a in s.assign()) == [1, 3]
