"""
The batch scheduler: which job runs on which peer, sans-IO.

A batch is ``n`` jobs, each to be run on ``replicas`` distinct peers.  Peers
join with the number of jobs they take at once (their advertised
concurrency); the scheduler hands out :class:`Assignment`\\ s to fill every
free slot (so a fast peer, freeing slots sooner, takes more: work
stealing by pulling) and, when nothing is left to hand out, duplicates a
straggler onto an idle peer (stealing at the tail; the first result wins).

Results are compared by digest.  A job is accepted when ``quorum`` digests
agree (all of them for ``replicas = 2``, a majority for 3 or more, as
BOINC does); a peer whose digest disagrees with an accepted one is a
*liar*: it is reported and gets nothing more of this batch.  Two results
that disagree with no quorum yet get one more replica, up to
``max_replicas``.

Failures that are not results (the peer went away, did not answer in time,
refused) put the replica back in the queue, up to ``max_attempts`` times
per job; a peer that refuses for good (``retry_peer=False``) or goes away
leaves the batch.

Nothing here does I/O: the glue calls :meth:`Scheduler.assign`, starts what
it returns, reports back with :meth:`completed` / :meth:`failed` /
:meth:`expire`, and takes :meth:`take_events` and :meth:`take_cancelled`.
Time comes from the injected ``now``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

ACCEPTED = "accepted"
FAILED = "failed"
LIAR = "liar"

NO_QUORUM = "no-quorum"
TOO_MANY_ATTEMPTS = "too-many-attempts"
NO_PEERS = "no-peers"

BUSY_PAUSE = 0.25
"""Seconds a peer gets no job after a failed one (it may have been busy)."""


def quorum_for(replicas: int) -> int:
    """Agreeing results needed: 1 of 1, 2 of 2, a majority of 3 or more."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, not {replicas}")
    return replicas if replicas <= 2 else replicas // 2 + 1


@dataclass(eq=False)
class Assignment:
    """One replica of one job, on one peer."""

    id: int
    job: int
    peer: Hashable
    started: float
    twin: Assignment | None = None
    """The assignment this one duplicates (or is duplicated by), if any."""

    def __repr__(self) -> str:
        return f"<Assignment {self.id} job {self.job} on {self.peer}>"


@dataclass
class _Job:
    index: int
    want: int
    results: dict = field(default_factory=dict)  # peer -> digest
    running: dict = field(default_factory=dict)  # assignment id -> Assignment
    attempts: int = 0
    state: str = "open"  # open, accepted, failed

    def peers(self) -> set:
        return set(self.results) | {a.peer for a in self.running.values()}

    def needed(self) -> int:
        singles = sum(1 for a in self.running.values() if a.twin is None or a.id < a.twin.id)
        return self.want - len(self.results) - singles


@dataclass
class _Peer:
    slots: int
    running: set = field(default_factory=set)  # assignment ids
    not_before: float = 0.0


@dataclass(frozen=True)
class Event:
    """Something the glue must act on or report."""

    kind: str  # accepted, failed, liar
    job: int
    digest: object = None
    peer: Hashable = None
    reason: str = ""
    winners: tuple = ()


class Scheduler:
    """Places the jobs of one batch on peers; see the module docstring."""

    def __init__(
        self,
        jobs: int,
        replicas: int,
        now: Callable[[], float],
        timeout: float,
        max_attempts: int = 4,
        max_replicas: int | None = None,
        done: frozenset[int] = frozenset(),
    ) -> None:
        self.replicas = replicas
        self.quorum = quorum_for(replicas)
        self.max_replicas = max_replicas if max_replicas is not None else replicas + 2
        self.now = now
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._jobs = {i: _Job(i, replicas) for i in range(jobs) if i not in done}
        self._open = sorted(self._jobs)
        self._peers: dict[Hashable, _Peer] = {}
        self._assignments: dict[int, Assignment] = {}
        self._ids = itertools.count(1)
        self._events: list[Event] = []
        self._cancelled: list[Assignment] = []
        self.excluded: dict[Hashable, str] = {}
        self.liars: set[Hashable] = set()
        self._durations: list[float] = []
        self.accepted = 0
        self.failed_jobs = 0
        self._sealed = False

    # -- peers -----------------------------------------------------------------------

    def add_peer(self, peer: Hashable, slots: int) -> None:
        """``peer`` takes up to ``slots`` jobs at once (again, if it had left)."""
        if peer in self.excluded or slots < 1:
            return
        if peer in self._peers:
            self._peers[peer].slots = slots
        else:
            self._peers[peer] = _Peer(slots)

    def remove_peer(self, peer: Hashable, why: str) -> None:
        """``peer`` is gone: its running replicas go back to the queue; it gets no more."""
        self.excluded.setdefault(peer, why)
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for assignment_id in list(state.running):
            assignment = self._assignments.get(assignment_id)
            if assignment is not None:
                self._cancelled.append(assignment)
                self._drop(assignment, count_attempt=True)
        self._check_starved()

    @property
    def peers(self) -> list:
        """The peers taking part now."""
        return list(self._peers)

    # -- placing -------------------------------------------------------------------------

    def assign(self) -> list[Assignment]:
        """Fill every free slot; the assignments to start now."""
        started: list[Assignment] = []
        now = self.now()
        progress = True
        while progress:
            progress = False
            for peer, state in sorted(
                self._peers.items(), key=lambda item: len(item[1].running) - item[1].slots
            ):
                if len(state.running) >= state.slots or state.not_before > now:
                    continue
                job = self._next_for(peer)
                twin = None
                if job is None:
                    twin = self._straggler_for(peer, now)
                    if twin is None:
                        continue
                    job = self._jobs[twin.job]
                assignment = Assignment(next(self._ids), job.index, peer, now, twin)
                if twin is not None:
                    twin.twin = assignment
                job.running[assignment.id] = assignment
                state.running.add(assignment.id)
                self._assignments[assignment.id] = assignment
                started.append(assignment)
                progress = True
        return started

    def _next_for(self, peer: Hashable) -> _Job | None:
        for index in self._open:
            job = self._jobs[index]
            if job.state == "open" and job.needed() > 0 and peer not in job.peers():
                return job
        return None

    def _straggler_for(self, peer: Hashable, now: float) -> Assignment | None:
        if not self._durations:
            return None
        typical = sorted(self._durations)[len(self._durations) // 2]
        best = None
        for assignment in self._assignments.values():
            job = self._jobs[assignment.job]
            if assignment.twin is not None or peer in job.peers():
                continue
            if now - assignment.started <= typical:
                continue
            if best is None or assignment.started < best.started:
                best = assignment
        return best

    # -- outcomes --------------------------------------------------------------------------

    def completed(self, assignment: Assignment, digest: object, trusted: bool = True) -> None:
        """
        ``assignment`` produced a result with ``digest``.  ``trusted=False``
        marks an outcome that may honestly differ between peers (a
        resource limit hit): it counts for a quorum but never brands a liar.
        """
        if self._assignments.get(assignment.id) is not assignment:
            return  # cancelled meanwhile
        self._durations.append(self.now() - assignment.started)
        job = self._jobs[assignment.job]
        twin = assignment.twin
        self._drop(assignment, count_attempt=False)
        if twin is not None and twin.id in job.running:
            self._cancelled.append(twin)
            self._drop(twin, count_attempt=False)
        if job.state != "open":
            return
        job.results[assignment.peer] = (digest, trusted)
        self._decide(job)

    def failed(self, assignment: Assignment, why: str, retry_peer: bool = True) -> None:
        """
        ``assignment`` ended without a result (disconnect, no answer,
        refusal); the replica is queued again.  ``retry_peer=False`` takes
        the peer out of the batch (a refusal that will not change).
        """
        if self._assignments.get(assignment.id) is not assignment:
            return
        twin = assignment.twin
        self._drop(assignment, count_attempt=twin is None)
        peer = self._peers.get(assignment.peer)
        if not retry_peer:
            self.remove_peer(assignment.peer, why)
        elif peer is not None:
            peer.not_before = self.now() + BUSY_PAUSE
        job = self._jobs[assignment.job]
        if job.state == "open" and job.attempts >= self.max_attempts and job.needed() > 0:
            self._fail(job, f"{TOO_MANY_ATTEMPTS}: last {why}")
        self._check_starved()

    def expire(self) -> list[Assignment]:
        """Fail (for retry elsewhere) the assignments older than ``timeout``; return them."""
        now = self.now()
        late = [a for a in self._assignments.values() if now - a.started > self.timeout]
        for assignment in late:
            self._cancelled.append(assignment)
            self.failed(assignment, "no answer in time")
        return late

    def _decide(self, job: _Job) -> None:
        counts: dict = {}
        for digest, _trusted in job.results.values():
            counts[digest] = counts.get(digest, 0) + 1
        digest, votes = max(counts.items(), key=lambda item: item[1])
        if votes >= self.quorum:
            job.state = "accepted"
            self.accepted += 1
            winners = tuple(p for p, (d, _) in job.results.items() if d == digest)
            self._events.append(Event(ACCEPTED, job.index, digest=digest, winners=winners))
            for peer, (other, trusted) in job.results.items():
                if other != digest and trusted:
                    self._brand(peer, job.index)
            for assignment in list(job.running.values()):
                self._cancelled.append(assignment)
                self._drop(assignment, count_attempt=False)
            return
        if not job.running and len(job.results) >= job.want:
            if job.want >= self.max_replicas:
                self._fail(job, NO_QUORUM)
            else:
                job.want += 1
        self._check_starved()

    def _brand(self, peer: Hashable, job: int) -> None:
        if peer in self.liars:
            return
        self.liars.add(peer)
        self._events.append(Event(LIAR, job, peer=peer))
        self.remove_peer(peer, "its result disagreed with the quorum")

    def _fail(self, job: _Job, reason: str) -> None:
        job.state = "failed"
        self.failed_jobs += 1
        for assignment in list(job.running.values()):
            self._cancelled.append(assignment)
            self._drop(assignment, count_attempt=False)
        self._events.append(Event(FAILED, job.index, reason=reason))

    def _drop(self, assignment: Assignment, count_attempt: bool) -> None:
        self._assignments.pop(assignment.id, None)
        job = self._jobs[assignment.job]
        job.running.pop(assignment.id, None)
        if count_attempt:
            job.attempts += 1
        if assignment.twin is not None:
            assignment.twin.twin = None
            assignment.twin = None
        peer = self._peers.get(assignment.peer)
        if peer is not None:
            peer.running.discard(assignment.id)

    def seal(self) -> None:
        """No new peer will join: jobs that cannot get enough distinct peers fail."""
        self._sealed = True
        self._check_starved()

    def _check_starved(self) -> None:
        """Fail open jobs that can no longer get enough distinct peers (once sealed)."""
        if not self._sealed:
            return
        for job in list(self._jobs.values()):
            if job.state != "open" or job.needed() <= 0:
                continue
            usable = set(self._peers) - set(job.results)
            if len(usable) < job.needed() and not job.running:
                self._fail(job, NO_QUORUM if job.results else NO_PEERS)

    # -- reading ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every job is accepted or failed."""
        return all(job.state != "open" for job in self._jobs.values())

    def running(self) -> list[Assignment]:
        """The assignments under way."""
        return list(self._assignments.values())

    def take_events(self) -> list[Event]:
        """What happened since the last call (accepted jobs, failed jobs, liars)."""
        events, self._events = self._events, []
        return events

    def take_cancelled(self) -> list[Assignment]:
        """Assignments whose work is no longer wanted: the glue stops them."""
        cancelled, self._cancelled = self._cancelled, []
        return cancelled

    def counts(self) -> dict:
        """Jobs by state, and running assignments."""
        return {
            "jobs": len(self._jobs),
            "accepted": self.accepted,
            "failed": self.failed_jobs,
            "running": len(self._assignments),
            "peers": len(self._peers),
        }
