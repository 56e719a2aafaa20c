"""
:class:`RunnerProcess`: the daemon's side of the job runner
(:mod:`peerd.providers.compute.runner`), a child process started with
``reactor.spawnProcess`` that forks one process per job.

Requests go out as JSON lines on the runner's stdin; answers come back on
its stdout and fire Deferreds.  If the runner dies, its jobs end with
``worker-crashed`` and the next request starts a new one.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from peerd.providers.compute import reasons

log = Logger()

MAX_LINE = 1024 * 1024


class _RunnerProtocol(ProcessProtocol):
    def __init__(self, owner: RunnerProcess) -> None:
        self.owner = owner
        self.buffer = b""
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                log.warn("compute runner sent a line that is not JSON: {line!r}", line=line[:200])
                continue
            self.owner.message(self, message)
        if len(self.buffer) > MAX_LINE:
            self.transport.signalProcess("KILL")

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.info("compute runner: {line}", line=line)

    def processEnded(self, reason: Any) -> None:
        self.owner.ended(self, reason)
        self.ended.callback(None)


class RunnerProcess:
    """Starts the runner on demand and matches its answers to requests."""

    def __init__(self, reactor: Any, python: str = sys.executable) -> None:
        self.reactor = reactor
        self.python = python
        self._protocol: _RunnerProtocol | None = None
        self._pending: dict[int, tuple[_RunnerProtocol, defer.Deferred]] = {}
        self._pids: dict[int, int] = {}
        self._ids = itertools.count(1)
        self.started_count = 0

    def _ensure(self) -> _RunnerProtocol:
        if self._protocol is None:
            protocol = _RunnerProtocol(self)
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME")}
            self.reactor.spawnProcess(
                protocol,
                self.python,
                [self.python, "-m", "peerd.providers.compute.runner"],
                env=env,
                childFDs={0: "w", 1: "r", 2: "r"},
            )
            self._protocol = protocol
            self.started_count += 1
        return self._protocol

    def _request(self, message: dict) -> tuple[int, defer.Deferred]:
        protocol = self._ensure()
        request_id = next(self._ids)
        d: defer.Deferred = defer.Deferred()
        self._pending[request_id] = (protocol, d)
        protocol.transport.write((json.dumps({**message, "id": request_id}) + "\n").encode())
        return request_id, d

    def run(self, spec: dict) -> tuple[int, defer.Deferred]:
        """
        Run a job (``spec`` as :class:`~peerd.providers.compute.sandbox.JobSpec`).
        Returns its id (for :meth:`kill`) and a Deferred firing with the
        ``done`` message: ``result``, ``cpu``, ``max_rss``, ``wall``.
        """
        return self._request({"op": "run", "spec": spec})

    def compile(self, source: str, dest: str, reservation: int, timeout: float) -> defer.Deferred:
        """Compile ``source`` into ``dest``; fires with the ``done`` message."""
        message = {
            "op": "compile",
            "source": source,
            "dest": dest,
            "reservation": reservation,
            "timeout": timeout,
        }
        return self._request(message)[1]

    def kill(self, request_id: int, reason: str = reasons.CANCELLED) -> None:
        """Stop a job now; its Deferred fires with ``reason``."""
        entry = self._pending.get(request_id)
        if entry is not None and entry[0].transport is not None:
            message = {"op": "kill", "id": request_id, "reason": reason}
            entry[0].transport.write((json.dumps(message) + "\n").encode())

    def pid(self, request_id: int) -> int | None:
        """The process id of a running job, once started."""
        return self._pids.get(request_id)

    def message(self, protocol: _RunnerProtocol, message: dict) -> None:
        """An answer from the runner."""
        request_id = message.get("id")
        if message.get("op") == "started" and isinstance(request_id, int):
            self._pids[request_id] = int(message.get("pid", 0))
        elif message.get("op") == "done" and isinstance(request_id, int):
            self._pids.pop(request_id, None)
            entry = self._pending.pop(request_id, None)
            if entry is not None:
                entry[1].callback(message)

    def ended(self, protocol: _RunnerProtocol, reason: Any) -> None:
        """The runner exited: fail what it was doing."""
        if self._protocol is protocol:
            self._protocol = None
        for request_id, (owner, d) in list(self._pending.items()):
            if owner is protocol:
                del self._pending[request_id]
                self._pids.pop(request_id, None)
                result = {
                    "reason": reasons.CRASHED,
                    "exit_code": None,
                    "detail": "the job runner exited",
                }
                d.callback({"op": "done", "id": request_id, "result": result, "cpu": 0.0})

    def stop(self) -> defer.Deferred:
        """Close the runner's stdin (it kills its jobs and exits); fires when it has."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return defer.succeed(None)
        protocol.transport.closeStdin()
        return protocol.ended
