"""
One download through a relay versus the same download direct, on loopback.

Relayed: seeder B has ``[peer] listen = none`` and reserves a slot on relay
R (``[provider:relay] rate = 0``, unlimited, and ``circuit_max_bytes`` far
above the file size); downloader C is connected to R, and to B through a
circuit on R before the clock starts.  Direct: a listening seeder and a
downloader connected to it.  Both downloads are the same random file,
verified by SHA-256 afterwards.

Prints MB/s for each (from the download request to the verified file in
place) and the relay process's CPU seconds per GiB it relayed (psutil
``cpu_times`` before/after; relayed bytes from the relay's monthly usage,
both directions, so TLS and framing overhead included).

    python bench/relay_throughput.py [--size-mib 256] [--runs 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _files_common import (  # noqa: E402
    MB,
    GiB,
    MiB,
    Peer,
    make_random_file,
    sha256_of,
    wait_complete,
)

TIMEOUT = 600.0
RELAY_SETTINGS = {
    "rate": "0",
    "circuit_max_bytes": "1TiB",
    "circuit_max_seconds": "1h",
}


def relay_status(peer: Peer) -> dict:
    return peer.client.get("providers/relay/status")  # type: ignore[return-value]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def timed_download(getter: Peer, cid: str, destination: Path) -> float:
    start = time.perf_counter()
    getter.download(cid, destination)
    done = wait_complete([(getter, cid)], TIMEOUT, poll=0.02)
    return done[getter.name] - start


def run_direct(root: Path, source: Path, run: int) -> dict:
    seeder = Peer(root, f"dseed{run}")
    seeder.start()
    getter = Peer(root, f"dget{run}", peers=[seeder.port])
    getter.start()
    try:
        seeder.wait_ready()
        getter.wait_ready()
        cid = seeder.share(source)
        getter.wait_connections(1)
        destination = root / f"direct-{run}.bin"
        seconds = timed_download(getter, cid, destination)
        return {"seconds": seconds, "path": destination}
    finally:
        getter.stop()
        seeder.stop()


def run_relayed(root: Path, source: Path, run: int) -> dict:
    relay = Peer(root, f"relay{run}", settings={"provider:relay": RELAY_SETTINGS})
    relay.start()
    seeder = Peer(root, f"rseed{run}", peers=[relay.port], settings={"peer": {"listen": "none"}})
    seeder.start()
    getter = Peer(root, f"rget{run}", peers=[relay.port])
    getter.start()
    peers = (relay, seeder, getter)
    try:
        for p in peers:
            p.wait_ready()
        cid = seeder.share(source)
        wait_for(lambda: relay_status(relay)["reservations"], 30, "the seeder's reservation")
        getter.wait_connections(1)
        relay_id = relay.client.get("id")["peer_id"]  # type: ignore[index]
        seeder_id = seeder.client.get("id")["peer_id"]  # type: ignore[index]
        getter.client.post("peers", {"address": f"{seeder_id}@{relay_id}@127.0.0.1:{relay.port}"})
        relayed0 = relay_status(relay)["monthly"]["bytes"]
        cpu0 = relay.cpu()
        destination = root / f"relayed-{run}.bin"
        seconds = timed_download(getter, cid, destination)
        cpu1 = relay.cpu()
        relayed = relay_status(relay)["monthly"]["bytes"] - relayed0
        peers_of_getter = getter.client.get("peers")["peers"]  # type: ignore[index]
        via = {p["peer_id"]: p.get("relay") for p in peers_of_getter}
        if via.get(seeder_id) != relay_id:
            raise SystemExit(f"the download did not go through the relay: {via}")
        problems = [line for p in peers for line in p.log_problems()]
        return {
            "seconds": seconds,
            "path": destination,
            "relay_cpu": cpu1 - cpu0,
            "relayed": relayed,
            "problems": problems,
        }
    finally:
        for p in reversed(peers):
            p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1, help="runs of each (median reported)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    direct: list[dict] = []
    relayed: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="peerd-bench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        source = root / "src" / "random.bin"
        digest = make_random_file(source, size)
        for r in range(args.runs):  # interleaved, so drifting load hits both alike
            for results, job in ((direct, run_direct), (relayed, run_relayed)):
                result = job(root, source, r)
                result["ok"] = sha256_of(result["path"]) == digest
                result["path"].unlink()
                print(
                    f"# run {r + 1} {job.__name__}: {size / result['seconds'] / MB:.1f} MB/s",
                    file=sys.stderr,
                )
                results.append(result)

    def mbps(results: list[dict]) -> float:
        return size / statistics.median(r["seconds"] for r in results) / MB

    cpu_per_gib = statistics.median(r["relay_cpu"] / (r["relayed"] / GiB) for r in relayed)
    relayed_gib = statistics.median(r["relayed"] for r in relayed) / GiB
    print(
        f"\n{args.size_mib} MiB, 1 seeder -> 1 downloader, 127.0.0.1, "
        f"median of {args.runs} run(s)\n"
    )
    print(f"{'path':<44} {'MB/s':>7} {'relay CPU s/GiB':>16} {'verified':>9}")
    print(f"{'direct':<44} {mbps(direct):>7.1f} {'-':>16} {all(r['ok'] for r in direct)!s:>9}")
    label = "through a relay (rate = 0)"
    print(
        f"{label:<44} {mbps(relayed):>7.1f} {cpu_per_gib:>16.2f} "
        f"{all(r['ok'] for r in relayed)!s:>9}"
    )
    print(
        f"\nrelayed/direct: {mbps(relayed) / mbps(direct):.0%}; the relay carried "
        f"{relayed_gib:.3f} GiB (both directions, TLS included) per run"
    )
    problems = [line for r in relayed for line in r["problems"]]
    if problems:
        print("\nlog lines that look like problems:")
        for line in problems[:10]:
            print(f"  {line}")


if __name__ == "__main__":
    main()
