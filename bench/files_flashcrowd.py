"""
Flash crowd: 1 seeder + 8 downloaders, every peer limited to
``upload_rate = R``; each downloader is configured to dial only the seeder
(they find each other through the files provider's own peer exchange).
Prints the time from the first download request until all 9 peers hold the
verified file, against size/R (the ideal: everyone uploads all the time) and
8*size/R (the seeder serving everyone alone); the target is within
1.5 x size/R.

    python bench/files_flashcrowd.py [--size-mib 128] [--rate-mb 20] [--downloaders 8]

R is in MB/s (10^6 bytes), written to the config in bytes/s.  With the
default 2 cores, 9 peers share them: the table shows the CPU they used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _files_common import (  # noqa: E402
    MB,
    MiB,
    Peer,
    bench_dir,
    make_random_file,
    parse_settings,
    sha256_of,
)
from _files_common import wait_complete as _wait  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rate-mb", type=float, default=20.0, help="R, every peer's upload_rate")
    parser.add_argument("--downloaders", type=int, default=8)
    parser.add_argument(
        "--mesh", action="store_true", help="also configure every downloader to dial the others"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="SECTION.KEY=VALUE for every peer's config (repeatable)",
    )
    args = parser.parse_args()
    size = args.size_mib * MiB
    rate = int(args.rate_mb * MB)
    settings = parse_settings(args.set)
    files = {"upload_rate": str(rate)}

    with bench_dir() as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        digest = make_random_file(source, size)
        seeder = Peer(root, "seed", files=files, settings=settings)
        seeder.start()
        getters: list[Peer] = []
        for i in range(args.downloaders):
            dials = [seeder.port] + ([g.port for g in getters] if args.mesh else [])
            getters.append(Peer(root, f"get{i}", peers=dials, files=files, settings=settings))
        for g in getters:
            g.start()
        peers = [seeder, *getters]
        try:
            for p in peers:
                p.wait_ready()
            cid = seeder.share(source)
            seeder.wait_connections(args.downloaders)
            cpu0 = [p.cpu() for p in peers]
            start = time.perf_counter()
            for i, g in enumerate(getters):
                g.download(cid, root / f"out{i}.bin")
            done = _wait([(g, cid) for g in getters], 900, poll=0.1)
            cpu1 = [p.cpu() for p in peers]
            wall = max(done.values()) - start
            seeder_sent = seeder.files_status().get("bytes_uploaded") or 0
            sent = [g.files_status().get("bytes_uploaded") or 0 for g in getters]
            connections = [g.connections() for g in getters]
            ok = all(sha256_of(root / f"out{i}.bin") == digest for i in range(len(getters)))
            problems = [f"{p.name}: {line}" for p in peers for line in p.log_problems()]
        finally:
            for p in peers:
                p.stop()

    ideal = size / rate
    single = args.downloaders * size / rate
    finish = sorted(t - start for t in done.values())
    cpu = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
    print(
        f"\nflash crowd: 1 seeder + {args.downloaders} downloaders, {args.size_mib} MiB, "
        f"upload_rate = {args.rate_mb:g} MB/s on every peer, 127.0.0.1"
        + (" (mesh)" if args.mesh else " (downloaders dial the seeder only)")
        + (f"; settings {args.set}" if args.set else "")
        + "\n"
    )
    rows = [
        (f"all {args.downloaders + 1} hold the file (s)", f"{wall:.1f}"),
        ("ideal size/R (s)", f"{ideal:.1f}"),
        (f"one server serving all, {args.downloaders}*size/R (s)", f"{single:.1f}"),
        ("ratio time / (size/R)  [target <= 1.5]", f"{wall / ideal:.2f}"),
        (
            "first / median / last downloader done (s)",
            f"{finish[0]:.1f} / {finish[len(finish) // 2]:.1f} / {finish[-1]:.1f}",
        ),
        ("seeder uploaded (copies of the file)", f"{seeder_sent / size:.2f}"),
        ("downloaders uploaded, min-max (MB)", f"{min(sent) / MB:.0f}-{max(sent) / MB:.0f}"),
        (
            "connections per downloader at the end, min-max",
            f"{min(connections)}-{max(connections)}",
        ),
        ("CPU s, all 9 processes, during the run", f"{cpu:.1f}"),
        ("all copies verified (SHA-256)", "yes" if ok else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v:>16}")
    for line in problems[:20]:
        print(f"log: {line}")


if __name__ == "__main__":
    main()
