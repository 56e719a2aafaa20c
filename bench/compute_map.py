"""
``peerctl map`` of the CPU-bound example against one local wasmtime
process and against Dask distributed.

The job is ``examples/compute/primes.wat`` with N calibrated so that one job
takes about ``--job-seconds`` (1 s) in a local wasmtime; there are 64 inputs
(N, N+1, ...).  Measured, each from the batch's start to its last output:

* sequential: the 64 jobs one after another in this process, with wasmtime
  configured as a worker configures it (fuel metering on);
* peerd: ``map`` from a requester to 1, 2 and 4 worker peers (real
  ``twistd peerd`` processes, ``concurrency = 1`` each), sandbox on;
* Dask: a ``distributed.LocalCluster`` of 1, 2 and 4 single-threaded worker
  processes, each task running the same module through wasmtime (compiled
  once per worker process, a fresh store per task, like a peerd job).

Printed: jobs/s, speed-up over sequential, and efficiency = speed-up /
min(workers, cores available), the cores available being those not busy with
other work in the two seconds before the run (the machines are shared).  Then per-job overhead: 64 jobs of
``examples/compute/empty.wat``, seconds per job with one worker (peerd) or
one worker process (Dask).

    pip install distributed          # or: pip install '.[bench-compute]'
    python bench/compute_map.py [--jobs 64] [--job-seconds 1.0] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from harness import Cluster, Peer, wait_until  # noqa: E402

from peerd.providers.compute import sandbox  # noqa: E402

EXAMPLES = REPO / "examples" / "compute"
PRIMES = EXAMPLES / "primes.wat"
EMPTY = EXAMPLES / "empty.wat"
RESERVATION = 256 * 1024 * 1024
FUEL = 10**13
API = "providers/compute/"


# -- the local baseline ---------------------------------------------------------------------


class LocalWasm:
    """One module in one process, run as a worker runs it (fuel on, fresh store per job)."""

    def __init__(self, source: Path) -> None:
        import wasmtime

        self.wasmtime = wasmtime
        self.engine = wasmtime.Engine(sandbox.engine_config(RESERVATION))
        self.module = wasmtime.Module(self.engine, source.read_text())
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()

    def run(self, stdin_path: Path) -> bytes:
        wasmtime = self.wasmtime
        out = bytearray()
        wasi = wasmtime.WasiConfig()
        wasi.stdin_file = str(stdin_path)
        wasi.stdout_custom = lambda data: out.extend(data)
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasi)
        store.set_fuel(FUEL)
        instance = self.linker.instantiate(store, self.module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            if e.code:
                raise
        return bytes(out)


def write_inputs(directory: Path, values: list[int]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(values):
        path = directory / f"in{i:03d}.txt"
        path.write_text(f"{n}\n")
        paths.append(path)
    return paths


def calibrate(target: float, scratch: Path) -> int:
    """N such that primes below N takes about ``target`` seconds here."""
    local = LocalWasm(PRIMES)
    n = 400_000
    path = scratch / "calibrate.txt"
    while True:
        path.write_text(f"{n}\n")
        started = time.perf_counter()
        local.run(path)
        took = time.perf_counter() - started
        if took > target / 3:
            return int(n * (target / took) ** (2 / 3))
        n *= 2


def sequential(source: Path, inputs: list[Path]) -> tuple[float, list[bytes]]:
    local = LocalWasm(source)
    started = time.perf_counter()
    outputs = [local.run(p) for p in inputs]
    return time.perf_counter() - started, outputs


# -- Dask ----------------------------------------------------------------------------------------

_DASK_CACHE: dict = {}


def dask_task(source_text: str, stdin: bytes) -> bytes:
    """A Dask task: run the module (compiled once per worker process) on ``stdin``."""
    import tempfile as _tempfile

    import wasmtime

    key = hash(source_text)
    if key not in _DASK_CACHE:
        config = wasmtime.Config()
        config.consume_fuel = True
        engine = wasmtime.Engine(config)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        _DASK_CACHE[key] = (engine, wasmtime.Module(engine, source_text), linker)
    engine, module, linker = _DASK_CACHE[key]
    with _tempfile.NamedTemporaryFile() as f:
        f.write(stdin)
        f.flush()
        out = bytearray()
        wasi = wasmtime.WasiConfig()
        wasi.stdin_file = f.name
        wasi.stdout_custom = lambda data: out.extend(data)
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        store.set_fuel(FUEL)
        instance = linker.instantiate(store, module)
        with contextlib.suppress(wasmtime.ExitTrap):
            instance.exports(store)["_start"](store)
    return bytes(out)


def run_dask(workers: int, source: Path, inputs: list[Path]) -> tuple[float, list[bytes]]:
    from distributed import Client, LocalCluster

    text = source.read_text()
    data = [p.read_bytes() for p in inputs]
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(dask_task, [text] * workers, [b"1"] * workers, pure=False))
        started = time.perf_counter()
        futures = client.map(dask_task, [text] * len(data), data, pure=False)
        outputs = client.gather(futures)
        return time.perf_counter() - started, outputs


# -- peerd ----------------------------------------------------------------------------------------


def start_peers(root: Path, workers: int) -> tuple[Cluster, Peer, list[Peer]]:
    cluster = Cluster(root)
    # nice 0, like Dask's workers (a worker's default, 10, yields to everything else)
    options = {"concurrency": "1", "max_seconds": "10m", "max_fuel": str(FUEL), "nice": "0"}
    nodes = [cluster.add(f"w{i}", sections={"provider:compute": options}) for i in range(workers)]
    requester = cluster.add(
        "req",
        peers=[w.address for w in nodes],
        sections={"provider:compute": {"serve": "no"}},
    )
    cluster.start(*nodes, requester)
    wait_until(lambda: len(requester.peers()) == workers, 30, "the requester to connect")
    return cluster, requester, nodes


def run_peerd(
    requester: Peer, workers: list[Peer], source: Path, inputs: list[Path], outdir: Path
) -> tuple[float, list[bytes]]:
    shutil.rmtree(outdir, ignore_errors=True)
    body = {
        "module": str(source),
        "inputs": [str(p) for p in inputs],
        "outdir": str(outdir),
        "peers": [w.peer_id for w in workers],
        "fuel": FUEL,
    }
    started = time.perf_counter()
    batch = requester.api.post(API + "map", body)["batch"]
    while True:
        batch = requester.api.get(API + "batches/" + batch["id"])["batch"]
        if batch["ended"] is not None and batch["state"] != "landing":
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if batch["failed"] or batch["error"]:
        raise RuntimeError(f"batch failed: {batch}")
    return elapsed, [(outdir / (p.name + ".out")).read_bytes() for p in inputs]


def warm_up(requester: Peer, workers: list[Peer], source: Path, scratch: Path) -> None:
    """Send the module to every worker (compiled and cached) before the clock starts."""
    inputs = write_inputs(scratch / "warm", [1000] * len(workers))
    run_peerd(requester, workers, source, inputs, scratch / "warm-out")


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    import psutil

    # What other work leaves us: on a shared machine "the cores available" is less than cpu_count.
    busy = psutil.cpu_percent(interval=2.0) / 100 * cores
    available = max(1, round(cores - busy))
    try:
        import distributed  # noqa: F401
    except ImportError:
        if not args.no_dask:
            sys.exit("Dask is not installed: pip install distributed (or run with --no-dask)")

    scratch = Path(tempfile.mkdtemp(prefix="peerd-bench-compute-"))
    cluster = None
    try:
        n = calibrate(args.job_seconds, scratch)
        inputs = write_inputs(scratch / "in", [n + i for i in range(args.jobs)])
        empty_inputs = write_inputs(scratch / "empty", [0] * args.jobs)
        seq_time, expected = sequential(PRIMES, inputs)
        per_job = seq_time / args.jobs
        print(f"machine: {cores} cores, {busy:.1f} busy with other work before the run, so "
              f"{available} available; {args.jobs} jobs of primes below ~{n} "
              f"({per_job:.2f} s each in one local wasmtime)")  # fmt: skip
        rows = [("sequential (1 local wasmtime)", 1, seq_time)]
        overhead: dict[str, float] = {}

        cluster, requester, workers = start_peers(scratch / "peers", max(args.workers))
        for k in args.workers:
            warm_up(requester, workers[:k], PRIMES, scratch)
            took, outputs = run_peerd(requester, workers[:k], PRIMES, inputs, scratch / "out")
            assert outputs == expected, "peerd outputs differ from the local run"
            rows.append((f"peerd map, {k} worker peer{'s' if k > 1 else ''}", k, took))
        warm_up(requester, workers[:1], EMPTY, scratch)
        took, _ = run_peerd(requester, workers[:1], EMPTY, empty_inputs, scratch / "out-empty")
        overhead["peerd, 1 worker"] = took / args.jobs
        warm_up(requester, workers[:2], EMPTY, scratch)
        took, _ = run_peerd(requester, workers[:2], EMPTY, empty_inputs, scratch / "out-empty")
        overhead["peerd, 2 workers"] = took / args.jobs
        cluster.cleanup()
        cluster = None

        if not args.no_dask:
            for k in args.workers:
                took, outputs = run_dask(k, PRIMES, inputs)
                assert outputs == expected, "Dask outputs differ from the local run"
                rows.append((f"Dask LocalCluster, {k} worker{'s' if k > 1 else ''}", k, took))
            overhead["Dask, 1 worker"] = run_dask(1, EMPTY, empty_inputs)[0] / args.jobs
            overhead["Dask, 2 workers"] = run_dask(2, EMPTY, empty_inputs)[0] / args.jobs

        print()
        print(f"{'':38} {'seconds':>8} {'jobs/s':>7} {'speed-up':>9} {'efficiency':>11}")
        for name, k, took in rows:
            speedup = seq_time / took
            efficiency = speedup / min(k, available)
            print(
                f"{name:38} {took:8.2f} {args.jobs / took:7.2f} {speedup:8.2f}x {efficiency:10.0%}"
            )
        print()
        print("per-job overhead (64 empty jobs, wall seconds per job):")
        for name, seconds in overhead.items():
            print(f"  {name:20} {seconds * 1000:7.1f} ms")
    finally:
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
