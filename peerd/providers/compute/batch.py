"""
:class:`Batch`: the requester's side of ``run`` and ``map``.

It finds the compute peers, asks each for its offer, sends the module to
those that lack it (once per peer), then lets the
:class:`~peerd.providers.compute.scheduler.Scheduler` place the jobs and
carries out what it decides: one stream per job, a timer for answers that
do not come, cancellation of work no longer wanted.  Accepted outputs land
in OUTDIR (``map``) or stay in memory (``run``).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from peerd.providers.compute import landing, reasons
from peerd.providers.compute.protocol import Request, RequestFailed
from peerd.providers.compute.scheduler import ACCEPTED, FAILED, LIAR, Assignment, Scheduler

GRACE = 15.0
"""Seconds a requester waits past a job's timeout before it tries elsewhere."""
TICK = 0.5
ASK_TIMEOUT = 60.0
"""Seconds to wait for an offer, or for a module to be stored and compiled."""

_ids = itertools.count(1)


def digest(result: dict, output: bytes) -> str:
    """What replicas must agree on: how the job ended and every byte of its output."""
    h = hashlib.sha256()
    h.update(f"{result.get('reason')}|{result.get('exit_code')}|".encode())
    h.update(output)
    return h.hexdigest()


@dataclass
class JobInput:
    """One job of a batch: its input (a file, or bytes for ``run``) and where it lands."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    output: Path | None = None
    key: str = ""
    hash: str = ""
    state: str = "pending"  # pending, done, skipped, failed
    reason: str | None = None
    detail: str = ""
    result: dict = field(default_factory=dict)
    stdout: bytes | None = None
    peers: list[str] = field(default_factory=list)


class Batch:
    """One ``run`` or ``map`` in progress."""

    def __init__(
        self,
        provider: Any,
        module: bytes,
        jobs: list[JobInput],
        args: list[str],
        request: dict,
        replicas: int,
        peers: list | None,
        keep_outputs: bool,
    ) -> None:
        self.id = f"b{next(_ids)}"
        self.provider = provider
        self.node = provider.node
        self.module = module
        self.module_hash = hashlib.sha256(module).hexdigest()
        self.jobs = jobs
        self.args = args
        self.request = request
        self.replicas = replicas
        self.only_peers = set(peers) if peers else None
        self.keep_outputs = keep_outputs
        self.started = time.time()
        self.ended: float | None = None
        self.state = "starting"
        self.error: str | None = None
        self.liars: list[dict] = []
        self.refusals: dict[str, str] = {}
        self.peer_jobs: dict[str, int] = {}
        self.modules_sent = 0
        self.scheduler: Scheduler | None = None
        self._streams: dict[int, Request] = {}
        self._outcomes: dict[tuple[int, object], tuple[dict, bytes]] = {}
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.node.clock
        self.finished: defer.Deferred = defer.Deferred()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Hash inputs, skip verified outputs, prepare peers, then place jobs until done."""
        timeout = float(self.request.get("timeout") or self.provider.limits.max_seconds)
        await self.node.run_in_thread(self._hash_inputs)
        done = frozenset(i for i, job in enumerate(self.jobs) if job.state != "pending")
        self.scheduler = Scheduler(
            len(self.jobs),
            self.replicas,
            self.node.clock.seconds,
            2 * timeout + GRACE,  # a job may wait behind one other at its worker
            done=done,
        )
        self.state = "running"
        self._ticker.start(TICK, now=False)
        candidates = [
            p.peer_id
            for p in self.node.connected_peers()
            if "compute" in p.providers
            and (self.only_peers is None or str(p.peer_id) in self.only_peers)
        ]
        await defer.DeferredList(
            [defer.ensureDeferred(self._prepare(peer)) for peer in candidates],
            consumeErrors=True,
        )
        self.scheduler.seal()
        self._pump()

    def _hash_inputs(self) -> None:
        for job in self.jobs:
            data = job.data if job.data is not None else job.path.read_bytes()  # type: ignore[union-attr]
            job.hash = hashlib.sha256(data).hexdigest()
            job.key = landing.job_key(self.module_hash, job.hash, self.args, self.request)
            if job.output is not None and landing.verified(job.output, job.key):
                job.state = "skipped"
            elif job.output is not None and not landing.is_ours(job.output):
                job.state, job.reason = "failed", "output-exists"
                job.detail = f"{job.output} exists and was not written by a batch; not replacing it"

    def _finish(self) -> None:
        if self.ended is not None:
            return
        self.ended = time.time()
        self.state = "done" if not self.error else "failed"
        if self._ticker.running:
            self._ticker.stop()
        for request in list(self._streams.values()):
            request.abort("the batch is over")
        self.provider.batch_finished(self)
        self.finished.callback(self)

    def cancel(self) -> None:
        """Stop: running jobs are cancelled on their peers."""
        if self.ended is None:
            self.error = reasons.CANCELLED
            for job in self.jobs:
                if job.state == "pending":
                    job.state, job.reason = "failed", reasons.CANCELLED
            self._finish()

    # -- peers --------------------------------------------------------------------------------

    async def _prepare(self, peer: Any) -> None:
        """Ask for the offer; send the module if the peer lacks it; then give it jobs."""
        try:
            offer = await self._ask(peer, {"t": "offer?", "module": self.module_hash})
            if offer.type == "refused":
                self._refused(peer, offer.header)
                return
            limits = offer.header.get("limits") or {}
            slots = int(limits.get("concurrency") or 1)
            if not offer.header.get("has_module"):
                answer = await self._ask(
                    peer, {"t": "module", "hash": self.module_hash}, self.module
                )
                self.modules_sent += 1
                if answer.type != "ready":
                    self._refused(peer, answer.header)
                    if answer.header.get("code") == reasons.COMPILE:
                        self._compile_error(str(answer.header.get("reason")))
                    return
        except RequestFailed as e:
            self.refusals[str(peer)] = f"{reasons.DISCONNECTED}: {e}"
            return
        except Exception as e:  # not connected any more, ...
            self.refusals[str(peer)] = f"{reasons.DISCONNECTED}: {e}"
            return
        if self.scheduler is not None and self.ended is None:
            # one more than it runs: the next job waits at the worker, ready to start
            self.scheduler.add_peer(peer, max(1, min(slots, 64)) + 1)
            self._pump()

    def _ask(self, peer: Any, header: dict, body: bytes = b"") -> defer.Deferred:
        """One request to ``peer``; gives up (the stream is reset) after ``ASK_TIMEOUT``."""
        request = Request(header, body, max_answer=1 << 20)
        timer = self.node.clock.callLater(ASK_TIMEOUT, request.abort, "no answer in time")
        d = self.node.open_stream(peer, {}, request)
        d.addCallback(lambda _: request.done)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)

    def _refused(self, peer: Any, header: dict) -> None:
        self.refusals[str(peer)] = f"{header.get('code')}: {header.get('reason')}"
        self.provider.log.info(
            "compute peer {peer} refused: {reason}", peer=peer, reason=self.refusals[str(peer)]
        )

    def _compile_error(self, detail: str) -> None:
        self.error = f"{reasons.COMPILE}: {detail}"
        for job in self.jobs:
            if job.state == "pending":
                job.state, job.reason, job.detail = "failed", reasons.COMPILE, detail
        self._finish()

    def peer_lost(self, peer: Any) -> None:
        """A peer disconnected: its jobs go elsewhere."""
        if self.scheduler is not None and self.ended is None:
            self.scheduler.remove_peer(peer, reasons.DISCONNECTED)
            self._pump()

    # -- placing ----------------------------------------------------------------------------------

    def _pump(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or self.ended is not None:
            return
        for assignment in scheduler.take_cancelled():
            request = self._streams.pop(assignment.id, None)
            if request is not None:
                request.abort("not needed any more")
        for event in scheduler.take_events():
            self._event(event)
        for assignment in scheduler.assign():
            defer.ensureDeferred(self._dispatch(assignment))
        for assignment in scheduler.take_cancelled():
            request = self._streams.pop(assignment.id, None)
            if request is not None:
                request.abort("not needed any more")
        if scheduler.finished and not self.landing and self.ended is None:
            self._finish()

    def _tick(self) -> None:
        if self.scheduler is not None:
            self.scheduler.expire()
            self._pump()

    async def _dispatch(self, assignment: Assignment) -> None:
        job = self.jobs[assignment.job]
        data = (
            job.data
            if job.data is not None
            else await self.node.run_in_thread(
                job.path.read_bytes  # type: ignore[union-attr]
            )
        )
        header = {
            "t": "job",
            "module": self.module_hash,
            "input": job.hash,
            "args": self.args,
            **{k: v for k, v in self.request.items() if v is not None},
        }
        request = Request(header, data, max_answer=self.provider.limits.max_output + (1 << 20))
        self._streams[assignment.id] = request
        record = self.provider.book.open(
            "requester", str(assignment.peer), self.module_hash, lambda: request.abort("cancelled")
        )
        try:
            await self.node.open_stream(assignment.peer, {}, request)
            answer = await request.done
        except Exception as e:
            self._streams.pop(assignment.id, None)
            self.provider.book.close(record, {"reason": reasons.DISCONNECTED, "detail": str(e)}, 0)
            if self.scheduler is not None:
                self.scheduler.failed(assignment, reasons.DISCONNECTED)
                if self.node.peer(assignment.peer) is None:
                    self.scheduler.remove_peer(assignment.peer, reasons.DISCONNECTED)
            self._pump()
            return
        self._streams.pop(assignment.id, None)
        self._answer(assignment, answer, record)
        self._pump()

    def _answer(self, assignment: Assignment, answer: Any, record: Any) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        header = answer.header
        if answer.type == "refused":
            code = str(header.get("code"))
            self.provider.book.close(record, {"reason": code, "detail": header.get("reason")}, 0)
            if code == reasons.UNKNOWN_MODULE:
                scheduler.failed(assignment, code)
                scheduler.remove_peer(assignment.peer, code)
                defer.ensureDeferred(self._prepare(assignment.peer))
            elif code == reasons.BUSY:
                scheduler.failed(assignment, code)
            else:
                self._refused(assignment.peer, header)
                scheduler.failed(assignment, code, retry_peer=False)
            return
        result = {
            k: header.get(k)
            for k in ("reason", "exit_code", "fuel_used", "cpu", "detail", "max_rss", "wall")
        }
        output = answer.body
        self.provider.book.close(record, result, float(result.get("cpu") or 0))
        self.peer_jobs[str(assignment.peer)] = self.peer_jobs.get(str(assignment.peer), 0) + 1
        self._outcomes[(assignment.job, assignment.peer)] = (result, output)
        trusted = result.get("reason") in reasons.DETERMINISTIC
        scheduler.completed(assignment, digest(result, output), trusted=trusted)

    def _event(self, event: Any) -> None:
        job = self.jobs[event.job]
        if event.kind == LIAR:
            self.liars.append({"peer": str(event.peer), "job": job.name})
            self.provider.log.warn(
                "compute peer {peer} returned a result for {job} that disagrees with the "
                "quorum; it gets no more jobs of batch {batch}",
                peer=event.peer,
                job=job.name,
                batch=self.id,
            )
        elif event.kind == FAILED:
            job.state, job.reason = "failed", event.reason
        elif event.kind == ACCEPTED:
            result, output = self._outcomes[(event.job, event.winners[0])]
            for peer in list(self._outcomes):
                if peer[0] == event.job:
                    del self._outcomes[peer]
            job.result = result
            job.reason = result.get("reason")
            job.detail = str(result.get("detail") or "")
            job.peers = [str(p) for p in event.winners]
            if self.keep_outputs:
                job.stdout = output
            if job.output is not None and job.reason == reasons.OK:
                job.state = "landing"
                d = self.node.run_in_thread(landing.land, job.output, output, job.key, job.peers)
                d.addCallbacks(lambda _: self._landed(job), lambda f: self._land_failed(job, f))
            else:
                job.state = "done" if job.reason == reasons.OK or job.output is None else "failed"

    def _landed(self, job: JobInput) -> None:
        job.state = "done"
        self._pump()

    def _land_failed(self, job: JobInput, failure: Any) -> None:
        job.state, job.reason, job.detail = "failed", "write-error", failure.getErrorMessage()
        self._pump()

    # -- reading -----------------------------------------------------------------------------------

    @property
    def landing(self) -> bool:
        """Outputs still being written."""
        return any(job.state == "landing" for job in self.jobs)

    def summary(self) -> dict:
        """The batch as the API shows it."""
        counts = {state: 0 for state in ("pending", "landing", "done", "skipped", "failed")}
        for job in self.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        return {
            "id": self.id,
            "state": "landing" if self.ended and self.landing else self.state,
            "module": self.module_hash,
            "replicas": self.replicas,
            "jobs": len(self.jobs),
            **counts,
            "running": len(self._streams),
            "error": self.error,
            "failures": [
                {"input": j.name, "reason": j.reason, "detail": j.detail}
                for j in self.jobs
                if j.state == "failed"
            ],
            "liars": self.liars,
            "refusals": self.refusals,
            "peers": self.peer_jobs,
            "modules_sent": self.modules_sent,
            "started": self.started,
            "ended": self.ended,
            "elapsed": (self.ended or time.time()) - self.started,
        }
