"""
The job runner: ``python -m peerd.providers.compute.runner``.

The daemon starts one runner (with ``reactor.spawnProcess``) and talks to it
in JSON lines on its stdin and stdout.  The runner imports wasmtime once and
then *forks one fresh process per job* (and per compilation): the job's
process drops every descriptor it inherited, sets its OS limits, runs the
job and exits.  So a job never runs in the daemon's interpreter nor on the
reactor, each job can be killed on its own, and starting one costs a fork,
not an interpreter start.  The runner stays single-threaded (it never
compiles or runs wasm itself), which is what makes forking it safe.

In: ``{"op": "run", "id", "spec": {...}}`` (see
:class:`~peerd.providers.compute.sandbox.JobSpec`), ``{"op": "compile",
"id", "source", "dest", "reservation", "timeout"}``, ``{"op": "kill", "id"}``.
Out: ``{"op": "started", "id", "pid"}`` then ``{"op": "done", "id",
"result", "cpu", "max_rss", "wall"}``.

The runner kills a job at its wall-clock deadline (``timeout``); it exits,
killing its jobs, when its stdin closes; and it and its jobs die with their
parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from peerd.providers.compute import reasons, sandbox

PR_SET_PDEATHSIG = 1
MAX_RESULT = 64 * 1024
MAX_LINE = 1024 * 1024
COMPILE_MEMORY = 1024 * 1024 * 1024
"""Address space a compilation may use on top of the interpreter."""


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """A job (or compilation) process the runner forked."""

    id: object
    pid: int
    result_fd: int
    deadline: float
    started: float
    cpu_limit: float
    buffer: bytearray = field(default_factory=bytearray)
    killed: str | None = None
    reported: bool = False
    spec_w: int | None = None


def _child_main(result_w: int, work: object, spec_r: int | None = None) -> None:
    """
    In the forked process: isolate, (wait for the job), limit, work, report,
    exit.  With ``spec_r`` the process is a *spare*: it makes itself ready,
    then blocks until the runner writes its job there (or closes it: exit).
    """
    code = 0
    try:
        die_with_parent()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        keep = sorted({result_w, spec_r if spec_r is not None else result_w})
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 4096)
        spec = None
        if spec_r is not None:
            work.prepare()  # type: ignore[attr-defined]
            spec = _read_all(spec_r)
            if not spec:
                os._exit(0)
        result = work(spec, lambda r: _report_and_exit(result_w, r))  # type: ignore[operator]
    except BaseException as e:  # report anything, never return into the runner's loop
        code = 1
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        result = {"reason": reasons.CRASHED, "detail": detail[-1000:]}
    _report_and_exit(result_w, result, code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _report_and_exit(result_w: int, result: dict, code: int = 0) -> None:
    """
    Hand the result over with this process's own CPU time and peak RSS, and
    close the pipe before exiting: the runner answers at once, without
    waiting for the kernel to tear the process down.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"result": result, "cpu": usage.ru_utime + usage.ru_stime, "max_rss": usage.ru_maxrss}
    data = json.dumps(report).encode("utf-8")[:MAX_RESULT]
    try:
        os.write(result_w, data)
        os.close(result_w)
    finally:
        os._exit(code)


class _RunWork:
    """What a job process does: get ready (as a spare), then run the job it is sent."""

    def __init__(self, reservation: int) -> None:
        self.reservation = reservation
        self.prepared: sandbox.Prepared | None = None

    def prepare(self) -> None:
        self.prepared = sandbox.prepare(self.reservation)

    def __call__(self, spec_data: bytes, report: object) -> dict:
        spec = sandbox.JobSpec.from_json(json.loads(spec_data))
        if spec.nice:
            os.nice(spec.nice)
        prepared = self.prepared or sandbox.prepare(spec.reservation)
        sandbox.apply_rlimits(
            address_space=prepared.mapped + spec.reservation + sandbox.GUARD + sandbox.AS_SLACK,
            cpu_seconds=max(1, math.ceil(spec.timeout) + 1),
            file_size=max(spec.max_output, spec.max_stderr) + 1,
        )
        return sandbox.run_job(spec, report, prepared)


def _compile_work(message: dict):
    def work(_spec: object, report: object) -> dict:
        reservation = int(message["reservation"])
        timeout = float(message.get("timeout", 60))
        sandbox.apply_rlimits(
            address_space=sandbox.address_space_for(0) + COMPILE_MEMORY,
            cpu_seconds=max(1, math.ceil(timeout) + 1),
            file_size=1 << 30,
        )
        return sandbox.compile_module(Path(message["source"]), Path(message["dest"]), reservation)

    return work


class Runner:
    """The fork server's loop."""

    def __init__(self, control_in: int, control_out: int) -> None:
        self.control_in = control_in
        self.control_out = control_out
        self.children: dict[int, Child] = {}
        self.by_id: dict[object, Child] = {}
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.inbuf = bytearray()
        self.closing = False
        self.spare: Child | None = None
        self.spare_for = 0

    def send(self, message: dict) -> None:
        """One line to the daemon."""
        data = (json.dumps(message) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.control_out, view) :]

    def serve(self) -> None:
        """Until stdin closes and every child is gone."""
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the daemon ends us by closing stdin
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.set_blocking(self.control_in, False)
        self.selector.register(self.control_in, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while not (self.closing and not self.children):
            for key, _ in self.selector.select(self._timeout()):
                if key.data == "control":
                    self._read_control()
                elif key.data == "wake":
                    self._drain(self.wake_r)
                else:
                    self._read_result(key.data)
            self._reap()
            self._enforce_deadlines()

    def _timeout(self) -> float | None:
        if not self.children:
            return None
        soonest = min(c.deadline for c in self.children.values())
        if soonest == math.inf:
            return None
        return max(0.0, min(1.0, soonest - time.monotonic()))

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass

    def _read_control(self) -> None:
        try:
            data = os.read(self.control_in, 65536)
        except BlockingIOError:
            return
        if not data:
            self._close()
            return
        self.inbuf += data
        while b"\n" in self.inbuf:
            line, _, rest = self.inbuf.partition(b"\n")
            self.inbuf = bytearray(rest)
            self._handle(json.loads(line))
        if len(self.inbuf) > MAX_LINE:
            raise ValueError("control line too long")

    def _close(self) -> None:
        self.closing = True
        self.selector.unregister(self.control_in)
        if self.spare is not None and self.spare.spec_w is not None:
            os.close(self.spare.spec_w)  # it exits on its own
            self.spare.spec_w = None
        self.spare = None
        for child in self.children.values():
            if child.id is not None:
                self._kill(child, reasons.CANCELLED)

    def _handle(self, message: dict) -> None:
        op = message.get("op")
        if op == "run":
            spec = message["spec"]
            reservation = int(spec["reservation"])
            sandbox.engine_for(reservation)
            child = self.spare if self.spare is not None and self.spare_for == reservation else None
            self.spare = None
            if child is None:
                child = self._fork(_RunWork(reservation), spare=True)
            self._assign(child, message["id"], float(spec["timeout"]), json.dumps(spec).encode())
            if not self.closing:
                self.spare, self.spare_for = (
                    self._fork(_RunWork(reservation), spare=True),
                    reservation,
                )
        elif op == "compile":
            timeout = float(message.get("timeout", 60))
            child = self._fork(_compile_work(message), spare=False)
            self._assign(child, message["id"], timeout, None)
        elif op == "kill":
            child = self.by_id.get(message.get("id"))
            if child is not None:
                self._kill(child, str(message.get("reason") or reasons.CANCELLED))

    def _fork(self, work: object, spare: bool) -> Child:
        """A new job process; a spare one waits for :meth:`_assign` to send it a job."""
        result_r, result_w = os.pipe()
        spec_r, spec_w = os.pipe() if spare else (None, None)
        pid = os.fork()
        if pid == 0:
            _child_main(result_w, work, spec_r)
        os.close(result_w)
        if spec_r is not None:
            os.close(spec_r)
        os.set_blocking(result_r, False)
        child = Child(None, pid, result_r, math.inf, time.monotonic(), 0.0, spec_w=spec_w)
        self.children[pid] = child
        self.selector.register(result_r, selectors.EVENT_READ, child)
        return child

    def _assign(self, child: Child, job_id: object, timeout: float, spec: bytes | None) -> None:
        """Give ``child`` its job (the spec, for a spare) and start its clock."""
        child.id = job_id
        child.started = time.monotonic()
        child.deadline = child.started + timeout
        child.cpu_limit = timeout
        self.by_id[job_id] = child
        if child.spec_w is not None:
            try:
                if spec:
                    os.write(child.spec_w, spec)  # small: fits the pipe's buffer
            except OSError:
                pass  # it died; reaping reports it
            os.close(child.spec_w)
            child.spec_w = None
        self.send({"op": "started", "id": job_id, "pid": child.pid})

    def _read_result(self, child: Child) -> None:
        """Read what the child reported; at end of file, answer for it (if it did report)."""
        if child.reported:
            return
        try:
            while True:
                data = os.read(child.result_fd, 65536)
                if not data:
                    break
                if len(child.buffer) < MAX_RESULT:
                    child.buffer += data
        except BlockingIOError:
            return
        report = _decode(child.buffer)
        if report is not None and child.killed is None:
            self._close_result(child)
            self.send(
                {
                    "op": "done",
                    "id": child.id,
                    "result": report["result"],
                    "cpu": report["cpu"],
                    "max_rss": report["max_rss"] * 1024,
                    "wall": time.monotonic() - child.started,
                }
            )

    def _close_result(self, child: Child) -> None:
        child.reported = True
        self.selector.unregister(child.result_fd)
        os.close(child.result_fd)
        self.by_id.pop(child.id, None)

    def _kill(self, child: Child, why: str) -> None:
        if child.killed is None:
            child.killed = why
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if now >= child.deadline and child.killed is None and child.id is not None:
                self._kill(child, reasons.TIMEOUT)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.id is None:  # a spare that ended without a job
                if self.spare is child:
                    self.spare = None
                if child.spec_w is not None:
                    os.close(child.spec_w)
                self.selector.unregister(child.result_fd)
                os.close(child.result_fd)
                continue
            self._finish(child, status, usage)

    def _finish(self, child: Child, status: int, usage: object) -> None:
        self._read_result(child)
        if child.reported:
            return  # answered when its result came
        self._close_result(child)
        cpu = usage.ru_utime + usage.ru_stime  # type: ignore[attr-defined]
        wall = time.monotonic() - child.started
        report = _decode(child.buffer)
        result = None if report is None else report["result"]
        if child.killed is not None:
            result = _killed_result(child, wall)
        elif result is None:
            result = _died_result(status, cpu, child.cpu_limit)
        self.send(
            {
                "op": "done",
                "id": child.id,
                "result": result,
                "cpu": cpu,
                "max_rss": usage.ru_maxrss * 1024,  # type: ignore[attr-defined]
                "wall": wall,
            }
        )


def _decode(buffer: bytearray) -> dict | None:
    """A child's complete report, or None."""
    if not buffer:
        return None
    try:
        value = json.loads(buffer)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("result"), dict):
        return None
    if not isinstance(value["result"].get("reason"), str):
        return None
    return value


def _killed_result(child: Child, wall: float) -> dict:
    if child.killed == reasons.TIMEOUT:
        detail = f"killed after {wall:.1f} s of wall-clock time (limit {child.cpu_limit:g} s)"
        return {"reason": reasons.TIMEOUT, "exit_code": None, "detail": detail}
    return {"reason": child.killed, "exit_code": None, "detail": "killed on request"}


def _died_result(status: int, cpu: float, cpu_limit: float) -> dict:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and cpu >= cpu_limit:
            detail = f"killed after {cpu:.1f} s of CPU time (limit {cpu_limit:g} s)"
            return {"reason": reasons.TIMEOUT, "exit_code": None, "detail": detail}
        detail = f"the job process was killed by signal {signal.Signals(sig).name}"
    else:
        detail = f"the job process exited with status {os.WEXITSTATUS(status)} without a result"
    return {"reason": reasons.CRASHED, "exit_code": None, "detail": detail}


def main() -> None:
    """Serve on stdin/stdout until stdin closes."""
    die_with_parent()

    control_out = os.dup(1)
    os.dup2(2, 1)  # stray prints go to the log, not into the control channel
    Runner(0, control_out).serve()


if __name__ == "__main__":
    sys.exit(main())
