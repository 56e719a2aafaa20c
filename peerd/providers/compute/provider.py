"""
:class:`ComputeProvider`: peers lend processing power.

As a worker it serves compute streams (:class:`~.protocol.WorkerStream`):
offers, modules, jobs, run by :class:`~.worker.JobService` in processes of
their own.  As a requester it runs batches (:class:`~.batch.Batch`) for
``peerctl run`` and ``peerctl map``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from peerd.disk import write_atomically
from peerd.interfaces import INode, IPeerInfo, IPeerObserver, IResourceProvider, IStream
from peerd.providers.compute.allowance import DailyUsage
from peerd.providers.compute.batch import Batch, JobInput
from peerd.providers.compute.limits import ComputeLimits
from peerd.providers.compute.modules import ModuleCache, config_tag, content_hash
from peerd.providers.compute.pool import RunnerProcess
from peerd.providers.compute.protocol import WorkerStream
from peerd.providers.compute.worker import JobBook, JobService

NAME = "compute"
SAVE_EVERY = 5.0
COMPILE_TIMEOUT = 60.0
MAX_BATCHES = 32
"""Finished batches kept for the API."""


@implementer(IResourceProvider, IPeerObserver)
class ComputeProvider:
    """Runs other peers' jobs; sends ours to them."""

    name = NAME

    def __init__(self, node: INode, config: dict) -> None:
        self.node = node
        self.log = node.log
        self.limits = ComputeLimits(
            serve=config["serve"],
            allow=config["allow"],
            concurrency=config["concurrency"],
            max_fuel=config["max_fuel"],
            max_memory=config["max_memory"],
            max_seconds=config["max_seconds"],
            max_output=config["max_output"],
            max_module=config["max_module"],
            max_input=config["max_input"],
            daily_cpu_per_peer=config["daily_cpu_per_peer"],
            daily_cpu_total=config["daily_cpu_total"],
            cache_size=config["cache_size"],
            nice=config["nice"],
        )
        data_dir = Path(node.data_dir)
        self.reservation = self.limits.max_memory
        self.runner = RunnerProcess(node.reactor)
        self.cache = ModuleCache(
            data_dir / "modules",
            config_tag(self.reservation),
            self.limits.cache_size,
            self._compile,
            node.run_in_thread,
        )
        self.usage_path = data_dir / "usage.json"
        self.usage = DailyUsage(
            self.limits.daily_cpu_per_peer, self.limits.daily_cpu_total, time.time
        )
        self.book = JobBook()
        self.service = JobService(
            self.limits,
            self.usage,
            self.runner,
            self.cache,
            data_dir / "jobs",
            node.run_in_thread,
            self.book,
            self.reservation,
        )
        self.batches: dict[str, Batch] = {}
        self._saver = LoopingCall(self._save)
        self._saver.clock = node.clock

    def _compile(self, source: str, dest: str) -> defer.Deferred:
        return self.runner.compile(source, dest, self.reservation, COMPILE_TIMEOUT)

    # -- IResourceProvider ---------------------------------------------------------------------

    def start(self) -> None:
        """Load today's usage, mount the API, watch peers."""
        from peerd.providers.compute.api import install_routes

        with contextlib.suppress(FileNotFoundError):
            self.usage.load(self.usage_path.read_bytes())
        install_routes(self.node.control, self)
        self.node.add_peer_observer(self)
        self._saver.start(SAVE_EVERY, now=False)
        self.log.info(
            "compute: lending {lending}; {concurrency} jobs at once",
            lending="yes" if self.limits.serve else "no",
            concurrency=self.limits.concurrency,
        )

    def stop(self) -> defer.Deferred:
        """Cancel batches, stop the runner (its jobs die with it), save the usage."""
        if self._saver.running:
            self._saver.stop()
        self.node.remove_peer_observer(self)
        for batch in list(self.batches.values()):
            batch.cancel()
        if self.usage.dirty:
            write_atomically(self.usage_path, self.usage.encode(), replace=True)
        return self.runner.stop()

    def stream_opened(self, stream: IStream) -> None:
        """Every compute stream carries one request."""
        stream.attach(WorkerStream(self, stream.peer.peer_id))

    def status(self) -> dict:
        """What a requester can plan with, and how busy this peer is."""
        return {
            "serving": self.limits.serve,
            "concurrency": self.limits.concurrency,
            "running": self.service.running,
            "queued": self.service.admitted - self.service.running,
            "served": self.service.served,
            "refused": self.service.refused,
            "batches": sum(1 for b in self.batches.values() if b.ended is None),
            "limits": self.limits.advertised(),
        }

    # -- peers --------------------------------------------------------------------------------------

    def peer_connected(self, peer: IPeerInfo) -> None:
        """Nothing to do: batches take the peers connected when they start."""

    def peer_disconnected(self, peer: IPeerInfo, reason: str) -> None:
        """Batches move that peer's jobs elsewhere."""
        for batch in list(self.batches.values()):
            batch.peer_lost(peer.peer_id)

    # -- worker side ---------------------------------------------------------------------------------

    def present(self, result: dict, output: bytes) -> dict:
        """The fields of a ``result`` answer."""
        return {
            "reason": result.get("reason"),
            "exit_code": result.get("exit_code"),
            "fuel_used": result.get("fuel_used"),
            "cpu": result.get("cpu"),
            "max_rss": result.get("max_rss"),
            "wall": result.get("wall"),
            "detail": str(result.get("detail") or "")[:1000],
            "output": content_hash(output),
        }

    def _save(self) -> defer.Deferred | None:
        if not self.usage.dirty:
            return None
        d = self.node.run_in_thread(
            write_atomically, self.usage_path, self.usage.encode(), replace=True
        )
        d.addErrback(
            lambda f: self.log.warn(
                "cannot save {path}: {e}", path=str(self.usage_path), e=f.getErrorMessage()
            )
        )
        return d

    # -- requester side ---------------------------------------------------------------------------------

    def start_batch(
        self,
        module: bytes,
        jobs: list[JobInput],
        args: list[str],
        request: dict,
        replicas: int,
        peers: list | None,
        keep_outputs: bool,
    ) -> Batch:
        """Start a batch; it runs in the background."""
        batch = Batch(self, module, jobs, args, request, replicas, peers, keep_outputs)
        self.batches[batch.id] = batch
        done = [b for b in self.batches.values() if b.ended is not None]
        for old in sorted(done, key=lambda b: b.ended or 0)[: max(0, len(done) - MAX_BATCHES)]:
            del self.batches[old.id]

        def failed(failure: Any) -> None:
            self.log.failure("compute batch {id} failed", failure, id=batch.id)
            batch.error = failure.getErrorMessage()
            batch._finish()

        defer.ensureDeferred(batch.start()).addErrback(failed)
        return batch

    def batch_finished(self, batch: Batch) -> None:
        """A batch ended."""
        summary = batch.summary()
        self.log.info(
            "compute batch {id}: {done} done, {skipped} skipped, {failed} failed in {elapsed:.1f} s",
            id=batch.id,
            done=summary["done"],
            skipped=summary["skipped"],
            failed=summary["failed"],
            elapsed=summary["elapsed"],
        )

    def details(self) -> dict:
        """Everything ``GET status`` shows."""
        return {
            **self.status(),
            "usage": self.usage.snapshot(),
            "cache": {"bytes": self.cache.size(), "limit": self.limits.cache_size},
            "allow": None if self.limits.allow is None else sorted(map(str, self.limits.allow)),
        }
