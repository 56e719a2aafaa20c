"""
Store and retrieve one random file on a local grid of real ``twistd -n
peerd`` processes: a client and six storage peers on 127.0.0.1, K=3, N=6.

Prints MB/s of ``peerctl store`` and ``peerctl retrieve`` (end to end: from
the command to the capability / the verified file in place), the client
daemon's peak RSS during each (psutil, sampled every 20 ms), and, as the
ceiling, plain AES-256-GCM encryption of the same bytes in the same
segments plus a copy to one file, in this process::

    python bench/storage_throughput.py [--size-mib 256] [--segment 1MiB]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from harness import Cluster, wait_until  # noqa: E402

from peerd.config_values import parse_size  # noqa: E402

MiB = 1024 * 1024
MB = 1_000_000
SERVERS = 6


class PeakRSS(threading.Thread):
    """Samples one process's RSS until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


def ceiling(source: Path, target: Path, segment: int) -> float:
    """Seconds to AES-256-GCM encrypt ``source`` segment by segment into ``target``."""
    aead = AESGCM(os.urandom(32))
    started = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as out:
        seg = 0
        while chunk := src.read(segment):
            out.write(aead.encrypt(seg.to_bytes(12, "big"), chunk, b""))
            seg += 1
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started


def timed(client, args: list[str]) -> tuple[float, int, str]:
    probe = PeakRSS(client.pid)
    probe.start()
    started = time.perf_counter()
    result = client.run_peerctl(*args, json_output=False, timeout=3600)
    elapsed = time.perf_counter() - started
    peak = probe.stop()
    if result.returncode != 0:
        raise SystemExit(f"peerctl {args[0]} failed: {result.stderr.strip()}")
    return elapsed, peak, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--segment", default="1MiB")
    args = parser.parse_args()
    size = args.size_mib * MiB
    segment = parse_size(args.segment)
    root = Path(tempfile.mkdtemp(prefix="peerd-bench-storage-"))
    cluster = Cluster(root)
    try:
        section = {"provider:storage": {"segment_size": args.segment, "quota": "8GiB"}}
        servers = [cluster.add(f"s{i}", sections=section) for i in range(SERVERS)]
        client = cluster.add("client", peers=[s.address for s in servers], sections=section)
        cluster.start(*servers, client)
        wait_until(
            lambda: sum("storage" in p["providers"] for p in client.peers().values()) == SERVERS,
            30,
            "the client to connect to six storage peers",
        )
        source = root / "source.bin"
        make_file(source, size)
        idle_rss = psutil.Process(client.pid).memory_info().rss

        store_s, store_peak, cap = timed(
            client, ["store", str(source), "--needed", "3", "--total", "6", "-q"]
        )
        out = root / "out.bin"
        retrieve_s, retrieve_peak, _ = timed(client, ["retrieve", cap, "-o", str(out), "-q"])
        if out.read_bytes() != source.read_bytes():
            raise SystemExit("retrieved bytes differ from the source")
        ceiling_s = ceiling(source, root / "ceiling.bin", segment)

        print(
            f"size:               {args.size_mib} MiB, K=3 N=6 on {SERVERS} peers, segments {args.segment}"
        )
        print(f"client idle RSS:    {idle_rss / MiB:.0f} MiB")
        print(
            f"store:              {size / store_s / MB:7.1f} MB/s  ({store_s:.2f} s), "
            f"client peak RSS {store_peak / MiB:.0f} MiB"
        )
        print(
            f"retrieve:           {size / retrieve_s / MB:7.1f} MB/s  ({retrieve_s:.2f} s), "
            f"client peak RSS {retrieve_peak / MiB:.0f} MiB"
        )
        print(f"ceiling (AES-GCM + copy, one process): {size / ceiling_s / MB:7.1f} MB/s")
    finally:
        cluster.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
