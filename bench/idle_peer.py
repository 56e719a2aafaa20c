"""
Idle RSS of one peer and the time from starting three ``twistd -n peerd``
processes (A; B dials A; C dials A and B) to a fully connected network.

    python bench/idle_peer.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peers_of(data_dir: Path) -> int:
    result = subprocess.run(
        [BIN / "peerctl", "--json", "--data-dir", str(data_dir), "peers"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return -1
    return len(json.loads(result.stdout)["peers"])


def one_run(root: Path) -> tuple[float, float]:
    ports = [free_port() for _ in range(3)]
    dials = [[], [ports[0]], [ports[0], ports[1]]]
    processes, dirs = [], []
    start = time.perf_counter()
    for name, port, targets in zip("abc", ports, dials, strict=True):
        data_dir = root / name
        config = root / f"{name}.ini"
        peers = " ".join(f"127.0.0.1:{p}" for p in targets)
        config.write_text(
            f"[peer]\ndata_dir = {data_dir}\nlisten = tcp:{port}:interface=127.0.0.1\n"
            f"[network]\npeers = {peers}\nbackoff_initial = 0.2s\nbackoff_max = 2s\n"
        )
        log = open(root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                [BIN / "twistd", "-n", "--pidfile=", "peerd", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        dirs.append(data_dir)
    try:
        deadline = time.monotonic() + 60
        while not all(peers_of(d) == 2 for d in dirs):
            if time.monotonic() > deadline:
                raise SystemExit("the three peers did not connect within 60 s")
            time.sleep(0.05)
        connected = time.perf_counter() - start
        time.sleep(5)
        rss = psutil.Process(processes[0].pid).memory_info().rss / 2**20
        return connected, rss
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times, rss = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="peerd-bench-") as tmp:
            t, r = one_run(Path(tmp))
            times.append(t)
            rss.append(r)
    print(f"{'measure':<40} {'median':>8} {'min':>8} {'max':>8}")
    print(
        f"{'3-peer network connected (s)':<40} {statistics.median(times):>8.2f} "
        f"{min(times):>8.2f} {max(times):>8.2f}"
    )
    print(
        f"{'idle peer RSS, connected to 2 (MiB)':<40} {statistics.median(rss):>8.1f} "
        f"{min(rss):>8.1f} {max(rss):>8.1f}"
    )


if __name__ == "__main__":
    main()
