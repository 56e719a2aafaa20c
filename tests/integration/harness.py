"""
Real ``twistd -n peerd`` processes on 127.0.0.1 for the integration tests.

A :class:`Peer` writes its INI config into a test directory, starts
``twistd -n --pidfile= peerd --config FILE`` with its output in a log file,
and is driven with ``peerctl --json``.  A :class:`Cluster` owns the peers of
one test (or module) and makes sure none outlives it.  The executables are
looked up next to ``sys.executable`` so the tests run in whatever virtualenv
runs pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from peerd.peerctl.client import ControlClient

BIN_DIR = Path(sys.executable).parent
TWISTD = BIN_DIR / "twistd"
PEERCTL = BIN_DIR / "peerctl"
REPO_ROOT = Path(__file__).resolve().parents[2]

READY_TIMEOUT = 15.0
# peerd turns SIGTERM into a clean stop with exit status 0 (peerd/tap.py).
CLEAN_STOP_CODES = (0,)
STOP_TIMEOUT = 10.0
_MAX_UNIX_PATH = 104  # sun_path is 108 bytes on Linux, 104 on the BSDs

_live: set[subprocess.Popen] = set()  # every daemon not yet reaped, for the atexit net

T = TypeVar("T")


def _kill_leftovers() -> None:
    for process in list(_live):
        if process.poll() is None:
            process.kill()
            process.wait()


atexit.register(_kill_leftovers)


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago. It is picked below
    the kernel's ephemeral range, so the outgoing connections of other peers
    cannot take it between this check and the daemon's bind, and never
    twice in one test run.
    """
    low = min(_ephemeral_low(), 65536)
    for _ in range(500):
        port = random.randrange(20000, low) if low > 20100 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """
    Call ``predicate`` until it returns something true and return that.

    An exception from ``predicate`` counts as "not yet"; the last one is
    quoted if time runs out.

    :raises AssertionError: after ``timeout`` seconds, naming ``what``.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as e:
            last_error = e
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = (
                f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            )
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def child_env(home: Path) -> dict[str, str]:
    """The environment for daemons and peerctl: never touch the real ~/.peerd."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env["PEERD_HOME"] = str(home / ".peerd")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_twistd(
    args: Iterable[str], home: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``twistd ARGS`` to completion (for start-up failures and ``--help``)."""
    return subprocess.run(
        [str(TWISTD), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(home),
        cwd=home,
    )


class PeerctlError(AssertionError):
    """``peerctl`` exited non-zero where success was expected."""


def ini_text(sections: Mapping[str, Mapping[str, str]]) -> str:
    """An INI file from ``{section: {key: value}}``."""
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


class Peer:
    """
    One ``twistd -n peerd`` process and its files.

    Either give ``directory`` and the options to write a config
    (``directory/peer.ini``, data in ``directory/data``), or
    ``config_file`` and ``data_dir`` of an existing config.

    ``launcher`` replaces ``twistd -n --pidfile= peerd`` (``--config FILE``
    is appended to it), for test doubles that start a patched daemon.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        port: int | None = None,
        peers: Iterable[str] = (),
        network: Mapping[str, str] | None = None,
        sections: Mapping[str, Mapping[str, str]] | None = None,
        config_file: Path | None = None,
        data_dir: Path | None = None,
        home: Path | None = None,
        launcher: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.launcher = list(launcher or (str(TWISTD), "-n", "--pidfile=", "peerd"))
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.home = home or directory
        self.port = free_port() if port is None else port
        self.log_file = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._peer_id: str | None = None
        if config_file is not None:
            assert data_dir is not None, "an existing config needs its data_dir"
            self.config_file = config_file
            self.data_dir = data_dir
        else:
            self.config_file = directory / "peer.ini"
            self.data_dir = directory / "data"
            self.write_config(peers=peers, network=network, sections=sections)
        socket_path = self.data_dir / "control.sock"
        if len(str(socket_path)) >= _MAX_UNIX_PATH:
            raise AssertionError(f"control socket path too long for a unix socket: {socket_path}")

    # -- config ---------------------------------------------------------------

    def write_config(
        self,
        *,
        peers: Iterable[str] = (),
        network: Mapping[str, str] | None = None,
        sections: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """(Re)write this peer's config file."""
        net = {"backoff_initial": "0.2s", "backoff_max": "1s"}
        peers = list(peers)
        if peers:
            net["peers"] = " ".join(peers)
        net.update(network or {})
        config = {
            "peer": {
                "data_dir": str(self.data_dir),
                "listen": f"tcp:{self.port}:interface=127.0.0.1",
            },
            "network": net,
        }
        config.update(sections or {})
        self.config_file.write_text(ini_text(config), encoding="utf-8")

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, without a PeerID."""
        return f"127.0.0.1:{self.port}"

    @property
    def pinned_address(self) -> str:
        """``PEERID@127.0.0.1:PORT``."""
        return f"{self.peer_id}@{self.address}"

    # -- process ----------------------------------------------------------------

    def start(self) -> Peer:
        """Start the daemon (does not wait; see :meth:`wait_ready`)."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        with open(self.log_file, "ab") as log:
            log.write(f"--- harness: starting {self.name} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*self.launcher, "--config", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(self.home),
                cwd=self.home,
            )
        _live.add(self.process)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Peer:
        """Wait until ``peerctl status`` answers; fail with the log's tail."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"peer {self.name} exited with status {self.process.returncode} "
                    f"before answering:\n{self.log_tail()}"
                )
            if self.run_peerctl("status").returncode == 0:
                return self
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"peer {self.name} did not answer 'peerctl status' within {timeout:g}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        """The process exists and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.process is not None
        return self.process.pid

    def terminate(self) -> None:
        """Send SIGTERM without waiting."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and return the exit status (kill and fail if it hangs).

        See :data:`CLEAN_STOP_CODES` for what a clean stop returns.
        """
        assert self.process is not None
        self.terminate()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"peer {self.name} ignored SIGTERM for {timeout:g}s:\n{self.log_tail()}"
            ) from None
        _live.discard(self.process)
        return code

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        _live.discard(self.process)

    # -- output -------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the daemon wrote so far (all its runs)."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for failure messages."""
        text = self.log_text().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text) or "    (empty log)"

    # -- peerctl --------------------------------------------------------------------

    def run_peerctl(
        self, *args: str, timeout: float = 30.0, json_output: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``peerctl [--json] --data-dir DATA ARGS``, whatever its exit status."""
        flags = ["--json"] if json_output else []
        return subprocess.run(
            [str(PEERCTL), *flags, "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(self.home),
            cwd=self.home,
        )

    def peerctl(self, *args: str, timeout: float = 30.0) -> Any:
        """``peerctl --json ARGS`` parsed; :class:`PeerctlError` on a non-zero exit."""
        result = self.run_peerctl(*args, timeout=timeout)
        if result.returncode != 0:
            raise PeerctlError(
                f"peerctl {' '.join(args)} against {self.name} exited {result.returncode}: "
                f"{result.stderr.strip()}"
            )
        return json.loads(result.stdout)

    @property
    def api(self) -> ControlClient:
        """A client of this daemon's control API (paths relative to ``/api/v1/``)."""
        return ControlClient(self.data_dir / "control.sock")

    @property
    def peer_id(self) -> str:
        """This peer's PeerID, from ``peerctl id`` (cached: it never changes)."""
        if self._peer_id is None:
            self._peer_id = self.peerctl("id")["peer_id"]
        return self._peer_id

    def forget_peer_id(self) -> None:
        """Ask ``peerctl id`` again next time."""
        self._peer_id = None

    def peers(self) -> dict[str, dict]:
        """Connected peers by PeerID."""
        return {p["peer_id"]: p for p in self.peerctl("peers")["peers"]}

    def status(self) -> dict:
        """``peerctl status``."""
        return self.peerctl("status")

    def __repr__(self) -> str:
        return f"<Peer {self.name} port={self.port} pid={getattr(self.process, 'pid', None)}>"


class Cluster:
    """The peers of one test; :meth:`cleanup` ends every one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peers: list[Peer] = []

    def add(self, name: str, **kwargs: Any) -> Peer:
        """A new (not yet started) peer in ``root/name``."""
        kwargs.setdefault("home", self.root)
        peer = Peer(name, self.root / name, **kwargs)
        self.peers.append(peer)
        return peer

    def adopt(self, peer: Peer) -> Peer:
        """Take care of a peer built elsewhere."""
        self.peers.append(peer)
        return peer

    def start(self, *peers: Peer) -> list[Peer]:
        """Start ``peers`` at once, then wait until each answers."""
        for peer in peers:
            peer.start()
        for peer in peers:
            peer.wait_ready()
        return list(peers)

    def cleanup(self) -> None:
        """SIGTERM every running peer at once; SIGKILL whoever is left after a while."""
        running = [p for p in self.peers if p.running]
        for peer in running:
            peer.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for peer in running:
            assert peer.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                peer.process.wait(max(0.1, deadline - time.monotonic()))
            peer.kill()
