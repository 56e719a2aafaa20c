"""
Swarm scaling: N seeders, each limited to ``upload_rate = R``, -> 1
downloader connected to all of them, for N = 1, 2, 4, 8.  Prints the
downloader's MB/s end to end (download requested -> verified file in place)
and the efficiency MB/s / (N * R); the target is >= 90 % at N = 8.

    python bench/files_scaling.py [--rate-mb 20] [--seconds 6] [--size-mib S] [--counts 1,2,4,8]

By default each run moves N * R * ``--seconds`` bytes, so every run takes
about the same time; ``--size-mib`` fixes the size instead.  All seeders
share the same file (one path, so one content ID).  R is in MB/s (10^6
bytes), written to the config in bytes/s.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _files_common import (  # noqa: E402
    MB,
    GiB,
    MiB,
    Peer,
    bench_dir,
    copy_prefix,
    make_random_file,
    parse_settings,
    sha256_of,
    wait_complete,
)


def one_run(root: Path, master: Path, n: int, size: int, rate: int, settings: dict) -> dict:
    source = root / f"share-{n}.bin"
    copy_prefix(master, source, size)
    files = {"upload_rate": str(rate)}
    seeders = [Peer(root, f"n{n}-seed{i}", files=files, settings=settings) for i in range(n)]
    for s in seeders:
        s.start()
    getter = Peer(
        root, f"n{n}-get", peers=[s.port for s in seeders], files=files, settings=settings
    )
    getter.start()
    try:
        for p in [*seeders, getter]:
            p.wait_ready()
        cids: list[str] = [""] * n

        def share(i: int) -> None:
            cids[i] = seeders[i].share(source)

        threads = [threading.Thread(target=share, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(set(cids)) != 1 or not cids[0]:
            raise SystemExit(f"seeders disagree on the content ID: {cids}")
        cid = cids[0]
        getter.wait_connections(n)
        destination = root / f"out-{n}.bin"
        cpu0 = getter.cpu()
        start = time.perf_counter()
        getter.download(cid, destination)
        done = wait_complete([(getter, cid)], 600, poll=0.1)
        wall = done[getter.name] - start
        cpu = getter.cpu() - cpu0
        uploaded = [s.files_status().get("bytes_uploaded") or 0 for s in seeders]
        status = getter.download_status(cid)
        problems = [f"{p.name}: {line}" for p in [*seeders, getter] for line in p.log_problems()]
        ok = sha256_of(destination) == sha256_of(source)
        return {
            "n": n,
            "size": size,
            "seconds": wall,
            "uploaded": uploaded,
            "sources": len(status.get("sources") or {}),
            "get_cpu": cpu,
            "ok": ok,
            "problems": problems,
        }
    finally:
        getter.stop()
        for s in seeders:
            s.stop()
        for path in (source, root / f"out-{n}.bin"):
            path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate-mb", type=float, default=20.0, help="R, each seeder's upload_rate")
    parser.add_argument("--seconds", type=float, default=6.0, help="size = N * R * this")
    parser.add_argument("--size-mib", type=int, default=None, help="a fixed size instead")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="SECTION.KEY=VALUE for every peer's config (repeatable)",
    )
    args = parser.parse_args()
    rate = int(args.rate_mb * MB)
    counts = [int(c) for c in args.counts.split(",")]
    settings = parse_settings(args.set)

    def size_for(n: int) -> int:
        if args.size_mib is not None:
            return args.size_mib * MiB
        return -(-int(n * rate * args.seconds) // MiB) * MiB

    results = []
    with bench_dir() as tmp:
        root = Path(tmp)
        master = root / "master.bin"
        make_random_file(master, max(size_for(n) for n in counts))
        for n in counts:
            r = one_run(root, master, n, size_for(n), rate, settings)
            print(
                f"# N={n}: {r['size'] / r['seconds'] / MB:.1f} MB/s in {r['seconds']:.1f} s",
                file=sys.stderr,
            )
            results.append(r)

    print(
        f"\nN seeders (upload_rate = {args.rate_mb:g} MB/s each) -> 1 downloader, 127.0.0.1"
        + (f"; settings {args.set}" if args.set else "")
        + "\n"
    )
    header = (
        f"{'N':>3} {'size MiB':>9} {'s':>6} {'MB/s':>7} {'N*R MB/s':>9} {'efficiency':>11} "
        f"{'sources':>8} {'per-seeder MB sent (min-max)':>29} {'get CPU s/GiB':>14} {'ok':>4}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        mbs = r["size"] / r["seconds"] / MB
        ideal = r["n"] * args.rate_mb
        up = f"{min(r['uploaded']) / MB:.0f}-{max(r['uploaded']) / MB:.0f}"
        print(
            f"{r['n']:>3} {r['size'] / MiB:>9.0f} {r['seconds']:>6.1f} {mbs:>7.1f} {ideal:>9.0f} "
            f"{100 * mbs / ideal:>10.0f}% {r['sources']:>8} {up:>29} "
            f"{r['get_cpu'] / (r['size'] / GiB):>14.2f} {'yes' if r['ok'] else 'NO':>4}"
        )
    for r in results:
        for line in r["problems"][:10]:
            print(f"log (N={r['n']}): {line}")


if __name__ == "__main__":
    main()
