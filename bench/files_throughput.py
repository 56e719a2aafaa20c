"""
One seeder -> one downloader of one random file on loopback, peerd side by
side with libtorrent (and aria2, when it can be run without a tracker).

For each tool: MB/s end to end (from the moment the download is requested to
the verified file in place), CPU seconds per GiB of each side's process
(psutil, before/after) and, for peerd, the worst latency of the control API
(``GET /api/v1/status`` every 50 ms on each side) during the transfer.

    python bench/files_throughput.py [--size-mib 1024] [--runs 1] [--tools peerd,libtorrent]

libtorrent runs as two processes (one session each, this script re-run with
``--lt-worker``), listening on 127.0.0.1 only, with DHT, LSD, UPnP, NAT-PMP
and the default plugins (ut_pex, ut_metadata, smart_ban) off and
``disable_pex`` on the torrent; the downloader is pointed at the seeder with
``connect_peer``.  The seeder adds the torrent in seed mode, so neither tool
hashes the source inside the timed part.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _files_common import (  # noqa: E402
    MB,
    GiB,
    LatencyProbe,
    MiB,
    Peer,
    bench_dir,
    cpu_seconds,
    free_port,
    make_random_file,
    parse_settings,
    sha256_of,
    wait_complete,
)

TIMEOUT = 600.0

# -- libtorrent ------------------------------------------------------------------------------


def lt_settings(lt, port: int) -> dict:
    return {
        "listen_interfaces": f"127.0.0.1:{port}",
        "outgoing_interfaces": "127.0.0.1",
        # TCP only, like peerd (uTP would also need the UDP port to match)
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": 0,
        # two processes on one address: allow them to talk to each other
        "allow_multiple_connections_per_ip": True,
    }


def lt_worker(role: str, torrent: str, save_path: str, seeder_port: int) -> None:
    """
    One libtorrent session in this process.  Seeder: print the listen port,
    seed until stdin closes.  Downloader: wait for a line on stdin, add the
    torrent, connect to the seeder, print ``done SECONDS`` when complete.
    """
    import libtorrent as lt

    # flags=0: no default plugins (ut_pex, ut_metadata, smart_ban)
    session = lt.session(lt_settings(lt, free_port()), 0)
    debug = bool(os.environ.get("LT_DEBUG"))
    if debug:
        session.set_alert_mask(lt.alert.category_t.all_categories)
    info = lt.torrent_info(torrent)
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = save_path
    params.flags = (
        (
            params.flags
            | lt.torrent_flags.disable_pex
            | lt.torrent_flags.disable_dht
            | lt.torrent_flags.disable_lsd
        )
        & ~lt.torrent_flags.auto_managed
        & ~lt.torrent_flags.paused
    )
    if role == "seed":
        params.flags |= lt.torrent_flags.seed_mode
        handle = session.add_torrent(params)
        while not session.is_listening() or not handle.status().is_seeding:
            time.sleep(0.01)
        print(f"port {session.listen_port()}", flush=True)
        sys.stdin.readline()  # until the parent closes it
        return
    while not session.is_listening():
        time.sleep(0.01)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    handle = session.add_torrent(params)
    handle.connect_peer(("127.0.0.1", seeder_port))
    while True:
        if debug:
            for a in session.pop_alerts():
                print(a.what(), a.message()[:160], file=sys.stderr, flush=True)
        status = handle.status()
        if status.is_seeding:  # every piece downloaded and hash-checked
            break
        if status.errc.value() != 0:
            print(f"error {status.errc.message()}", flush=True)
            return
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    print(f"done {elapsed:.6f} TCP", flush=True)
    sys.stdin.readline()


def make_torrent(path: Path, out: Path, flavour: str) -> tuple[int, str]:
    import libtorrent as lt

    fs = lt.file_storage()
    lt.add_files(fs, str(path))
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[flavour]
    t = lt.create_torrent(fs, 0, flags)
    t.set_creator("peerd bench")
    lt.set_piece_hashes(t, str(path.parent))
    out.write_bytes(lt.bencode(t.generate()))
    return t.piece_length(), lt.__version__


def run_libtorrent(root: Path, source: Path, size: int, flavour: str) -> dict:
    torrent = root / f"bench-{flavour}.torrent"
    piece, version = make_torrent(source, torrent, flavour)
    get_dir = root / f"lt-get-{flavour}"
    get_dir.mkdir()
    me = [sys.executable, __file__, "--lt-worker"]
    seeder = subprocess.Popen(
        [*me, "seed", str(torrent), str(source.parent), "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    getter = None
    try:
        line = seeder.stdout.readline().split()  # type: ignore[union-attr]
        if not line or line[0] != "port":
            raise SystemExit(f"libtorrent seeder failed: {line}")
        port = int(line[1])
        getter = subprocess.Popen(
            [*me, "get", str(torrent), str(get_dir), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if getter.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise SystemExit("libtorrent downloader failed to start")
        ps_seed, ps_get = psutil.Process(seeder.pid), psutil.Process(getter.pid)
        cpu0 = cpu_seconds(ps_seed), cpu_seconds(ps_get)
        start = time.perf_counter()
        getter.stdin.write("go\n")  # type: ignore[union-attr]
        getter.stdin.flush()  # type: ignore[union-attr]
        answer = getter.stdout.readline().split()  # type: ignore[union-attr]
        wall = time.perf_counter() - start
        cpu1 = cpu_seconds(ps_seed), cpu_seconds(ps_get)
        if not answer or answer[0] != "done":
            raise SystemExit(f"libtorrent download failed: {answer}")
        return {
            "tool": f"libtorrent {version} ({flavour}, {piece // 1024} KiB pieces, {answer[2]})",
            "seconds": wall,
            "inner_seconds": float(answer[1]),
            "seed_cpu": cpu1[0] - cpu0[0],
            "get_cpu": cpu1[1] - cpu0[1],
            "api_ms": None,
            "ok": (get_dir / source.name).stat().st_size == size,
            "path": get_dir / source.name,
        }
    finally:
        for p in (getter, seeder):
            if p is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()  # type: ignore[union-attr]
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# -- peerd -----------------------------------------------------------------------------------


def run_peerd(root: Path, source: Path, size: int, run: str, settings: dict, label: str) -> dict:
    seeder = Peer(root, f"seed{run}", settings=settings)
    seeder.start()
    getter = Peer(root, f"get{run}", peers=[seeder.port], settings=settings)
    getter.start()
    try:
        seeder.wait_ready()
        getter.wait_ready()
        cid = seeder.share(source)
        getter.wait_connections(1)
        destination = root / f"peerd-out-{run}.bin"
        probes = [LatencyProbe(seeder), LatencyProbe(getter)]
        for p in probes:
            p.start()
        cpu0 = seeder.cpu(), getter.cpu()
        start = time.perf_counter()
        getter.download(cid, destination)
        done = wait_complete([(getter, cid)], TIMEOUT, poll=0.1)
        wall = done[getter.name] - start
        cpu1 = seeder.cpu(), getter.cpu()
        worst = [p.stop() for p in probes]
        problems = seeder.log_problems() + getter.log_problems()
        return {
            "tool": label,
            "seconds": wall,
            "seed_cpu": cpu1[0] - cpu0[0],
            "get_cpu": cpu1[1] - cpu0[1],
            "api_ms": (worst[0] * 1000, worst[1] * 1000),
            "api_polls": sum(p.count for p in probes),
            "ok": destination.stat().st_size == size,
            "path": destination,
            "problems": problems,
            "uploaded": seeder.files_status().get("bytes_uploaded"),
        }
    finally:
        getter.stop()
        seeder.stop()


# -- main ------------------------------------------------------------------------------------


ARIA2_SKIP = (
    "aria2: skipped - aria2c cannot be pointed at a peer directly for a .torrent "
    "(no peer-address option; a tracker or DHT is the only way to find peers), and "
    "running a local tracker is out of scope here"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1, help="runs per tool (median reported)")
    parser.add_argument("--tools", default="peerd,libtorrent")
    parser.add_argument(
        "--lt-torrent", default="hybrid", help="libtorrent torrent kinds: hybrid,v1,v2 (comma list)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="an extra peerd row with these config settings on both sides, e.g.\n"
        "--variant 'network.stream_window=16MiB' (space-separated SECTION.KEY=VALUE)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check after")
    parser.add_argument("--lt-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lt_worker:
        role, torrent, save, port = args.lt_worker
        lt_worker(role, torrent, save, int(port))
        return

    size = args.size_mib * MiB
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    notes: list[str] = []
    rows: list[list[dict]] = []
    with bench_dir() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        source = root / "src" / "random.bin"
        t0 = time.perf_counter()
        digest = make_random_file(source, size)
        print(
            f"# {args.size_mib} MiB random file written in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        jobs: list = []
        for tool in tools:
            if tool == "peerd":
                variants = [("peerd", {})] + [
                    (f"peerd [{v}]", parse_settings(v.split())) for v in args.variant
                ]
                for k, (label, settings) in enumerate(variants):
                    jobs.append(
                        (
                            label,
                            lambda r, k=k, label=label, settings=settings: run_peerd(
                                root, source, size, f"{r}-{k}", settings, label
                            ),
                        )
                    )
            elif tool == "libtorrent":
                try:
                    import libtorrent  # noqa: F401
                except ImportError as e:
                    notes.append(f"libtorrent: skipped - cannot import: {e}")
                    continue
                for flavour in args.lt_torrent.split(","):
                    jobs.append(
                        (
                            f"lt-{flavour}",
                            lambda r, f=flavour: run_libtorrent(root / f"lt{r}", source, size, f),
                        )
                    )
            elif tool == "aria2":
                notes.append(ARIA2_SKIP)
            else:
                raise SystemExit(f"unknown tool {tool}")
        results: dict[str, list[dict]] = {name: [] for name, _ in jobs}
        # interleave the tools run by run, so drifting machine load hits all alike
        for r in range(args.runs):
            for name, job in jobs:
                if name.startswith("lt-"):
                    (root / f"lt{r}").mkdir(exist_ok=True)
                result = job(r)
                if not args.no_verify:
                    result["ok"] = result["ok"] and sha256_of(result["path"]) == digest
                result["path"].unlink()
                print(
                    f"# run {r + 1} {name}: {size / result['seconds'] / MB:.0f} MB/s",
                    file=sys.stderr,
                )
                results[name].append(result)
        rows = list(results.values())

    if "aria2" not in tools:
        notes.append(ARIA2_SKIP)
    gib = size / GiB
    print(
        f"\n{args.size_mib} MiB, 1 seeder -> 1 downloader, 127.0.0.1, median of {args.runs} run(s)\n"
    )
    header = (
        f"{'tool':<58} {'MB/s':>7} {'seed CPU s/GiB':>15} {'get CPU s/GiB':>14} "
        f"{'API worst ms seed/get':>22} {'verified':>9}"
    )
    print(header)
    print("-" * len(header))
    for runs in rows:
        if not runs:
            continue
        mbs = statistics.median(size / r["seconds"] / MB for r in runs)
        seed_cpu = statistics.median(r["seed_cpu"] / gib for r in runs)
        get_cpu = statistics.median(r["get_cpu"] / gib for r in runs)
        api = "-"
        if runs[0]["api_ms"] is not None:
            api = (
                f"{max(r['api_ms'][0] for r in runs):.0f} / {max(r['api_ms'][1] for r in runs):.0f}"
            )
        ok = "yes" if all(r["ok"] for r in runs) else "NO"
        print(
            f"{runs[0]['tool']:<58} {mbs:>7.0f} {seed_cpu:>15.2f} {get_cpu:>14.2f} {api:>22} {ok:>9}"
        )
        if len(runs) > 1:
            print(
                f"{'  (runs, MB/s)':<58} "
                + ", ".join(f"{size / r['seconds'] / MB:.0f}" for r in runs)
            )
    for runs in rows:
        for r in runs:
            for line in r.get("problems", [])[:10]:
                print(f"log: {line}")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
