"""
Helpers shared by the files-provider benchmarks (``files_*.py``): start real
``twistd -n peerd`` processes on 127.0.0.1 with temporary configs, drive them
through the control API, and measure their CPU time.  Not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from peerd.peerctl.client import ControlClient

BIN = Path(sys.executable).parent
MB = 1_000_000
MiB = 2**20
GiB = 2**30


@contextlib.contextmanager
def bench_dir():
    """A temporary directory; kept (and named on stderr) if PEERD_BENCH_KEEP is set."""
    if os.environ.get("PEERD_BENCH_KEEP"):
        path = tempfile.mkdtemp(prefix="peerd-bench-")
        print(f"# keeping {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="peerd-bench-") as path:
            yield path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256 (hex)."""
    digest = hashlib.sha256()
    chunk = 8 * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            data = os.urandom(min(chunk, left))
            digest.update(data)
            f.write(data)
            left -= len(data)
    return digest.hexdigest()


def copy_prefix(source: Path, target: Path, size: int) -> None:
    """``target`` holds the first ``size`` bytes of ``source``."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        left = size
        while left > 0:
            data = src.read(min(8 * MiB, left))
            if not data:
                raise ValueError(f"{source} is shorter than {size} bytes")
            dst.write(data)
            left -= len(data)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(8 * MiB):
            digest.update(data)
    return digest.hexdigest()


def parse_settings(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["network.stream_window=8MiB", ...]`` as ``{"network": {"stream_window": "8MiB"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.rpartition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants SECTION.KEY=VALUE, not {item!r}")
        out.setdefault(section, {})[name] = value
    return out


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` (all its threads)."""
    t = process.cpu_times()
    return t.user + t.system


class Peer:
    """One ``twistd -n peerd`` process with its own data dir, port and log."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        peers: list[int] = (),  # type: ignore[assignment]
        files: dict[str, str] | None = None,
        settings: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = root / name
        self.config = root / f"{name}.ini"
        self.log_path = root / f"{name}.log"
        sections: dict[str, dict[str, str]] = {
            "peer": {
                "data_dir": str(self.data_dir),
                "listen": f"tcp:{self.port}:interface=127.0.0.1",
            },
            "network": {
                "peers": " ".join(f"127.0.0.1:{p}" for p in peers),
                "backoff_initial": "0.2s",
                "backoff_max": "2s",
            },
        }
        if files:
            sections["provider:files"] = dict(files)
        for section, values in (settings or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                for section, values in sections.items()
            )
        )
        self.process: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.client = ControlClient(self.data_dir / "control.sock", timeout=120)

    def start(self) -> None:
        log = open(self.log_path, "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [BIN / "twistd", "-n", "--pidfile=", "peerd", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(
                    f"peer {self.name} exited; see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.client.get("status")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit(f"peer {self.name} not ready within {timeout} s") from None
                time.sleep(0.05)

    def connections(self) -> int:
        return self.client.get("status")["connections"]["total"]  # type: ignore[index]

    def wait_connections(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.connections() < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"peer {self.name}: fewer than {n} connections after {timeout} s")
            time.sleep(0.05)

    def share(self, path: Path) -> str:
        return self.client.post("providers/files/shares", {"path": str(path)})["share"]["cid"]  # type: ignore[index]

    def download(self, cid: str, destination: Path) -> dict:
        return self.client.post(  # type: ignore[return-value]
            "providers/files/downloads",
            {"cid": cid, "destination": str(destination), "force": True},
        )

    def download_status(self, cid: str) -> dict:
        return self.client.get(f"providers/files/downloads/{cid}")["download"]  # type: ignore[index]

    def files_status(self) -> dict:
        return self.client.get("providers/files/status")  # type: ignore[return-value]

    def cpu(self) -> float:
        assert self.ps is not None
        return cpu_seconds(self.ps)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Log lines that look like errors or tracebacks."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        words = ("Traceback", "ERROR", "Error", "error", "Unhandled", "CRITICAL", "ban")
        return [line for line in text.splitlines() if any(w in line for w in words)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class LatencyProbe(threading.Thread):
    """Calls ``GET /api/v1/status`` every ``interval`` s; records the worst latency."""

    def __init__(self, peer: Peer, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.client = ControlClient(peer.data_dir / "control.sock", timeout=60)
        self.interval = interval
        self.worst = 0.0
        self.count = 0
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            start = time.perf_counter()
            try:
                self.client.get("status")
            except Exception:
                self.failures += 1
            elapsed = time.perf_counter() - start
            self.worst = max(self.worst, elapsed)
            self.count += 1
            self._halt.wait(max(0.0, self.interval - elapsed))

    def stop(self) -> float:
        self._halt.set()
        self.join(70)
        return self.worst


def wait_complete(
    peers_cids: list[tuple[Peer, str]],
    timeout: float,
    poll: float = 0.05,
    on_done=None,
) -> dict[str, float]:
    """
    Poll each (peer, cid) until its download is ``complete``; the
    perf_counter time each completed at (by peer name).  Exits on failure.
    """
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    last_progress: dict[str, tuple[int, float]] = {}
    while len(done) < len(peers_cids):
        for peer, cid in peers_cids:
            if peer.name in done:
                continue
            status = peer.download_status(cid)
            state = status["state"]
            if state == "complete":
                done[peer.name] = time.perf_counter()
                if on_done is not None:
                    on_done(peer)
            elif state in ("failed", "cancelled", "error"):
                raise SystemExit(
                    f"{peer.name}: download {state}: {status.get('error')}\n{peer.log_tail()}"
                )
            else:
                bytes_done = status.get("bytes_done") or 0
                prev = last_progress.get(peer.name)
                if prev is None or bytes_done != prev[0]:
                    last_progress[peer.name] = (bytes_done, time.monotonic())
                elif time.monotonic() - prev[1] > 30:
                    raise SystemExit(
                        f"{peer.name}: download stalled at {bytes_done} bytes for 30 s "
                        f"(state {state}, detail {status.get('detail')})\n{peer.log_tail()}"
                    )
        if time.monotonic() > deadline:
            missing = [p.name for p, _ in peers_cids if p.name not in done]
            raise SystemExit(f"downloads not complete within {timeout} s: {missing}")
        if len(done) < len(peers_cids):
            time.sleep(poll)
    return done
