"""A synchronous client of the job runner, for tests and benchmarks: no reactor."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "compute"
MiB = 1024 * 1024
RESERVATION = 256 * MiB


class RunnerClient:
    """``python -m peerd.providers.compute.runner`` driven with blocking reads."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "peerd.providers.compute.runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._ids = itertools.count(1)

    def _send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def _wait(self, request_id: int) -> dict:
        assert self.process.stdout is not None
        while True:
            message = json.loads(self.process.stdout.readline())
            if message["op"] == "done" and message["id"] == request_id:
                return message

    def compile(self, name: str, source: Path | None = None) -> Path:
        """Compile ``examples/compute/NAME.wat`` (or ``source``); the compiled path."""
        dest = self.workdir / f"{name}.cwasm"
        request_id = next(self._ids)
        self._send(
            {
                "op": "compile",
                "id": request_id,
                "source": str(source or EXAMPLES / f"{name}.wat"),
                "dest": str(dest),
                "reservation": RESERVATION,
                "timeout": 30,
            }
        )
        done = self._wait(request_id)
        assert done["result"]["reason"] == "ok", done
        return dest

    def compile_result(self, source: Path) -> dict:
        """The result of compiling ``source`` (for modules expected to fail)."""
        request_id = next(self._ids)
        self._send(
            {
                "op": "compile",
                "id": request_id,
                "source": str(source),
                "dest": str(self.workdir / "bad.cwasm"),
                "reservation": RESERVATION,
            }
        )
        return self._wait(request_id)

    def run(
        self,
        compiled: Path,
        *args: str,
        stdin: bytes = b"",
        fuel: int = 10**10,
        memory: int = 64 * MiB,
        timeout: float = 20.0,
        max_output: int = MiB,
    ) -> tuple[dict, bytes]:
        """Run a job; its ``done`` message and its stdout."""
        request_id = next(self._ids)
        stdin_path = self.workdir / f"stdin{request_id}"
        stdin_path.write_bytes(stdin)
        out = self.workdir / f"stdout{request_id}"
        spec = {
            "compiled": str(compiled),
            "input": str(stdin_path),
            "output": str(out),
            "stderr": str(self.workdir / f"stderr{request_id}"),
            "args": list(args),
            "fuel": fuel,
            "memory": memory,
            "timeout": timeout,
            "max_output": max_output,
            "max_stderr": 4096,
            "reservation": RESERVATION,
        }
        self._send({"op": "run", "id": request_id, "spec": spec})
        done = self._wait(request_id)
        return done, out.read_bytes() if out.exists() else b""

    def close(self) -> None:
        """Close stdin: the runner ends its jobs and exits."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)
