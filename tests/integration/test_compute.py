"""
The compute provider between real peers: ``run`` on another peer,
byte-exact; ``map`` over four peers with one killed mid-batch; two
replicas catching a lying worker; the daily CPU allowance refusing the next
job; and the control API answering while both CPUs run jobs.

One cluster serves the module: a requester that lends nothing, four honest
workers, a liar (``lying_compute_peer.py``) and a worker with a tiny daily
allowance.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PEERCTL, Cluster, Peer, child_env, wait_until

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples" / "compute"
PRIMES = EXAMPLES / "primes.wat"
WORDCOUNT = EXAMPLES / "wordcount.wat"
MISBEHAVE = EXAMPLES / "misbehave.wat"
API = "providers/compute/"


def primes_below(n: int) -> int:
    """What primes.wat answers, by a sieve."""
    sieve = bytearray([1]) * max(n, 2)
    sieve[0:2] = b"\0\0"
    for k in range(2, int(n**0.5) + 1):
        if sieve[k]:
            sieve[k * k :: k] = bytes(len(range(k * k, n, k)))
    return sum(sieve[:n])


def word_count(data: bytes) -> bytes:
    """What wordcount.wat answers."""
    return b"%d %d %d\n" % (data.count(b"\n"), len(data.split()), len(data))


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Peer]]:
    root = tmp_path_factory.mktemp("compute")
    cluster = Cluster(root)
    honest = {"concurrency": "2", "max_seconds": "20s"}
    workers = {
        name: cluster.add(name, sections={"provider:compute": honest})
        for name in ("w1", "w2", "w3", "w4")
    }
    workers["liar"] = cluster.add(
        "liar",
        sections={"provider:compute": honest},
        launcher=[sys.executable, str(HERE / "lying_compute_peer.py")],
    )
    workers["stingy"] = cluster.add(
        "stingy", sections={"provider:compute": {"daily_cpu_per_peer": "0.05s"}}
    )
    requester = cluster.add(
        "req",
        peers=[p.address for p in workers.values()],
        sections={"provider:compute": {"serve": "no"}},
    )
    try:
        cluster.start(*workers.values(), requester)
        wait_until(lambda: len(requester.peers()) == len(workers), 20, "the requester to connect")
        yield {"req": requester, **workers}
    finally:
        cluster.cleanup()


def peer_flags(*peers: Peer) -> list[str]:
    return [arg for p in peers for arg in ("--peer", p.peer_id)]


def test_run_on_another_peer_is_byte_exact(peers: dict[str, Peer], tmp_path: Path) -> None:
    """`peerctl run` runs on another peer; its stdout is ours, its exit status ours."""
    req = peers["req"]
    text = b"the quick brown fox\njumps over\tthe lazy dog\n" * 1000 + b"no newline at the end"
    stdin = tmp_path / "text.txt"
    stdin.write_bytes(text)
    result = req.run_peerctl(
        "run", str(WORDCOUNT), "--stdin", str(stdin), *peer_flags(peers["w1"]), json_output=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == word_count(text)
    result = req.run_peerctl("run", str(MISBEHAVE), "exit", json_output=False)
    assert result.returncode == 3
    jobs = peers["w1"].peerctl("jobs")["jobs"]
    assert any(j["side"] == "worker" and j["peer"] == req.peer_id for j in jobs)


def test_map_over_four_peers_survives_one_killed(peers: dict[str, Peer], tmp_path: Path) -> None:
    """A map over four workers completes with every output right when one is killed mid-batch."""
    req = peers["req"]
    workers = [peers[n] for n in ("w1", "w2", "w3", "w4")]
    numbers = [300_000 + 1000 * i for i in range(24)]
    inputs = []
    for i, n in enumerate(numbers):
        path = tmp_path / "in" / f"n{i:02d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{n}\n")
        inputs.append(str(path))
    outdir = tmp_path / "out"
    command = [str(PEERCTL), "--json", "--data-dir", str(req.data_dir), "map", str(PRIMES),
               *inputs, "-o", str(outdir), *peer_flags(*workers)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(req.home), text=True
    )
    try:
        wait_until(lambda: len(list(outdir.glob("*.out"))) >= 4, 30, "four outputs")
        peers["w4"].kill()
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    batch = json.loads(stdout)
    assert batch["done"] == len(numbers) and batch["failed"] == 0
    assert batch["modules_sent"] <= len(workers)  # each worker got the module at most once
    for i, n in enumerate(numbers):
        assert (outdir / f"n{i:02d}.txt.out").read_text() == f"{n} {primes_below(n)}\n"
    # Run again: everything is verified in place and skipped.
    again = req.peerctl("map", str(PRIMES), *inputs, "-o", str(outdir), *peer_flags(*workers[:3]))
    assert again["skipped"] == len(numbers) and again["done"] == 0
    assert again["modules_sent"] == 0  # cached by every worker


def test_two_replicas_catch_a_lying_worker(peers: dict[str, Peer], tmp_path: Path) -> None:
    """With --replicas 2 the liar's results lose to the quorum; it is reported and excluded."""
    req, liar = peers["req"], peers["liar"]
    texts = [b"%d words here\n" % i * (i + 1) for i in range(6)]
    inputs = []
    for i, data in enumerate(texts):
        path = tmp_path / f"t{i}.txt"
        path.write_bytes(data)
        inputs.append(str(path))
    outdir = tmp_path / "out"
    batch = req.peerctl(
        "map", str(WORDCOUNT), *inputs, "-o", str(outdir), "--replicas", "2",
        *peer_flags(peers["w1"], peers["w2"], liar), timeout=60,
    )  # fmt: skip
    assert batch["failed"] == 0 and batch["done"] == len(texts)
    assert {entry["peer"] for entry in batch["liars"]} == {liar.peer_id}
    for i, data in enumerate(texts):
        assert (outdir / f"t{i}.txt.out").read_bytes() == word_count(data)
    assert "disagrees with the quorum" in req.log_text()


def test_daily_allowance_refuses_the_next_job(peers: dict[str, Peer]) -> None:
    """Past its daily CPU seconds a requester's next job is refused, naming the key."""
    req, stingy = peers["req"], peers["stingy"]
    first = req.run_peerctl(
        "run", str(MISBEHAVE), "loop", "--fuel", "3e8", *peer_flags(stingy), json_output=False
    )
    assert first.returncode == 125 and "fuel-exhausted" in first.stderr
    second = req.run_peerctl("run", str(MISBEHAVE), "exit", *peer_flags(stingy), json_output=False)
    assert second.returncode == 125
    assert "peer-allowance" in second.stderr
    assert "[provider:compute] daily_cpu_per_peer" in second.stderr
    usage = stingy.api.get(API + "status")["usage"]
    assert usage["by_peer"][req.peer_id] > 0.05


def test_status_answers_quickly_while_both_cpus_run_jobs(peers: dict[str, Peer]) -> None:
    """Two endless jobs keep both CPUs busy; the worker's API still answers at once."""
    req, worker = peers["req"], peers["w3"]
    body = {"module": str(MISBEHAVE), "args": ["loop"], "fuel": 10**12, "timeout": 15,
            "peers": [worker.peer_id]}  # fmt: skip
    batches = [req.api.post(API + "run", body)["batch"]["id"] for _ in range(2)]
    try:
        wait_until(lambda: worker.api.get(API + "status")["running"] == 2, 15, "two jobs running")
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            status = worker.api.get("status")
            latencies.append(time.monotonic() - started)
            assert "compute" in status["providers"]
        assert max(latencies) < 0.5, latencies
        print(f"\nstatus while 2 jobs run: median {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    finally:
        for batch in batches:
            req.api.delete(API + "batches/" + batch)
    wait_until(lambda: worker.api.get(API + "status")["running"] == 0, 10, "the jobs to be killed")
