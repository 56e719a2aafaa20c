"""
:class:`JobService`: the worker's side of the compute provider.  It admits
other peers' jobs (:func:`~peerd.providers.compute.limits.admit`), runs each
in its own process through the runner, charges the CPU it used to the
requester's daily allowance and keeps a short history for ``peerctl jobs``.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer

from peerd.providers.compute import reasons
from peerd.providers.compute.allowance import DailyUsage
from peerd.providers.compute.limits import ComputeLimits, Refused, admit, clamp_request
from peerd.providers.compute.modules import ModuleCache
from peerd.providers.compute.pool import RunnerProcess

MAX_STDERR = 64 * 1024
HISTORY = 200


@dataclass
class JobRecord:
    """One job as ``peerctl jobs`` shows it."""

    id: str
    side: str  # "worker": we ran it for ``peer``; "requester": ``peer`` ran it for us
    peer: str
    module: str
    started: float
    state: str = "running"
    reason: str | None = None
    exit_code: int | None = None
    cpu: float = 0.0
    fuel_used: int = 0
    ended: float | None = None
    detail: str = ""
    cancel: Callable[[], None] | None = field(default=None, repr=False)

    def json(self) -> dict:
        """For the API."""
        return {
            "id": self.id,
            "side": self.side,
            "peer": self.peer,
            "module": self.module,
            "state": self.state,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "cpu": round(self.cpu, 3),
            "fuel_used": self.fuel_used,
            "started": self.started,
            "ended": self.ended,
            "detail": self.detail,
        }


class JobBook:
    """Running and recent jobs, both sides, bounded."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.running: dict[str, JobRecord] = {}
        self.recent: deque[JobRecord] = deque(maxlen=HISTORY)

    def open(self, side: str, peer: str, module: str, cancel: Callable[[], None]) -> JobRecord:
        """A job starts."""
        record = JobRecord(f"{side[0]}{next(self._ids)}", side, peer, module, time.time())
        record.cancel = cancel
        self.running[record.id] = record
        return record

    def close(self, record: JobRecord, result: dict, cpu: float) -> None:
        """A job ended with ``result``."""
        self.running.pop(record.id, None)
        record.state = "done"
        record.reason = result.get("reason")
        record.exit_code = result.get("exit_code")
        record.fuel_used = int(result.get("fuel_used") or 0)
        record.detail = str(result.get("detail") or "")[:300]
        record.cpu = cpu
        record.ended = time.time()
        record.cancel = None
        self.recent.append(record)

    def all(self) -> list[dict]:
        """Running first, then recent (newest first)."""
        return [r.json() for r in self.running.values()] + [r.json() for r in reversed(self.recent)]


class JobService:
    """Runs admitted jobs for other peers."""

    def __init__(
        self,
        limits: ComputeLimits,
        usage: DailyUsage,
        runner: RunnerProcess,
        cache: ModuleCache,
        jobs_dir: Path,
        run_in_thread: Callable[..., defer.Deferred],
        book: JobBook,
        reservation: int,
    ) -> None:
        self.limits = limits
        self.usage = usage
        self.runner = runner
        self.cache = cache
        self.jobs_dir = jobs_dir
        self.run_in_thread = run_in_thread
        self.book = book
        self.reservation = reservation
        self.admitted = 0
        self.running = 0
        self.slots = defer.DeferredSemaphore(limits.concurrency)
        self.served = 0
        self.refused = 0
        shutil.rmtree(jobs_dir, ignore_errors=True)
        jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def check(self, peer: object, module: str, input_size: int) -> None:
        """Raise :class:`Refused` unless a job may start now (counts the refusal)."""
        try:
            admit(self.limits, self.usage, peer, self.admitted, 0, input_size)
            if not self.cache.has(module):
                raise Refused(reasons.UNKNOWN_MODULE, f"module {module} is not here; send it first")
        except Refused:
            self.refused += 1
            raise

    async def run(
        self,
        peer: object,
        module: str,
        data: bytes,
        args: list[str],
        request: dict,
        started: Callable[[JobRecord], None] | None = None,
    ) -> tuple[dict, bytes]:
        """
        Run one admitted job (call :meth:`check` first, in the same turn).
        Returns its result (``reason``, ``exit_code``, ``fuel_used``,
        ``cpu``, ``max_rss``, ``detail``) and its stdout; ``started`` gets
        the job's record (whose ``cancel`` kills it) as soon as it exists.
        """
        fuel, memory, seconds = clamp_request(
            self.limits, request.get("fuel"), request.get("memory"), request.get("timeout")
        )
        self.admitted += 1
        self.cache.pin(module)
        self.cache.touch(module)
        ids: list = []
        record = self.book.open("worker", str(peer), module, lambda: self._kill(ids))
        if started is not None:
            started(record)
        directory = self.jobs_dir / record.id
        try:
            await self.run_in_thread(_prepare, directory, data)
            spec = {
                "compiled": str(self.cache.path(module)),
                "input": str(directory / "stdin"),
                "output": str(directory / "stdout"),
                "stderr": str(directory / "stderr"),
                "args": args,
                "fuel": fuel,
                "memory": memory,
                "timeout": seconds,
                "max_output": self.limits.max_output,
                "max_stderr": MAX_STDERR,
                "reservation": self.reservation,
                "nice": self.limits.nice,
            }
            await self.slots.acquire()
            try:
                if ids:  # cancelled while it waited
                    message = {"result": {"reason": reasons.CANCELLED, "exit_code": None}}
                else:
                    self.running += 1
                    try:
                        request_id, done = self.runner.run(spec)
                        ids.append(request_id)
                        message = await done
                    finally:
                        self.running -= 1
            finally:
                self.slots.release()
            output = await self.run_in_thread(_collect, directory)
        except Exception as e:
            self.book.close(record, {"reason": reasons.CRASHED, "detail": str(e)}, 0.0)
            raise
        finally:
            self.admitted -= 1
            self.cache.unpin(module)
        result = dict(message.get("result") or {})
        cpu = float(message.get("cpu") or 0.0)
        result.update(cpu=cpu, max_rss=message.get("max_rss"), wall=message.get("wall"))
        self.usage.add(peer, cpu)
        self.served += 1
        self.book.close(record, result, cpu)
        return result, output

    def _kill(self, ids: list) -> None:
        """Kill a running job; a waiting one (``ids`` empty) is marked and never starts."""
        for request_id in ids:
            self.runner.kill(request_id)
        if not ids:
            ids.append(None)


def _prepare(directory: Path, data: bytes) -> None:
    directory.mkdir(mode=0o700)
    (directory / "stdin").write_bytes(data)


def _collect(directory: Path) -> Any:
    try:
        return (directory / "stdout").read_bytes()
    except FileNotFoundError:
        return b""
    finally:
        shutil.rmtree(directory, ignore_errors=True)
