"""
``peerctl`` commands of the compute provider: ``run``, ``map``, ``jobs``,
``cancel-job`` and ``compute``.

They call the routes under ``/api/v1/providers/compute/`` (see
``docs/api.rst``); paths are made absolute here, since the daemon reads and
writes them.  Standard library only, like the rest of ``peerctl``.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from urllib.parse import quote

from peerd.peerctl.client import EXIT_API_ERROR, EXIT_OK, ControlClient, PeerctlError
from peerd.peerctl.command import Command
from peerd.peerctl.output import format_bytes, format_duration, format_table, show

PREFIX = "providers/compute/"
EXIT_SANDBOX = 125
"""``peerctl run``'s status when the job did not end by itself (fuel, memory, timeout, ...)."""
BAR_WIDTH = 24
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_size(text: str) -> int:
    """``256MiB``, ``64k``, ``1000000`` -> bytes (powers of 1024 for units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB)")
    unit = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    return int(float(match[1]) * unit)


def parse_duration(text: str) -> float:
    """``60s``, ``2m``, ``500ms``, ``30`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 60s)")
    scale = {None: 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]
    return float(match[1]) * scale


def parse_fuel(text: str) -> int:
    """``1000000000`` or ``1e9``."""
    try:
        value = int(float(text.replace("_", "")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("fuel must be positive")
    return value


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="R",
        help="run each job on R distinct peers and accept agreeing results",
    )
    parser.add_argument("--fuel", type=parse_fuel, help="instructions a job may use (e.g. 1e10)")
    parser.add_argument("--memory", type=parse_size, help="memory a job may use (e.g. 256MiB)")
    parser.add_argument("--timeout", type=parse_duration, help="wall-clock limit (e.g. 60s)")
    parser.add_argument(
        "--peer",
        action="append",
        dest="peers",
        metavar="PEERID",
        help="use only this peer (repeat for several)",
    )


def _job_body(args: argparse.Namespace) -> dict:
    return {
        "module": _absolute(args.module),
        "replicas": args.replicas,
        "fuel": args.fuel,
        "memory": args.memory,
        "timeout": args.timeout,
        "peers": args.peers,
    }


def _wait(client: ControlClient, batch_id: str, on_progress=None) -> dict:
    interval = 0.02
    while True:
        batch = client.get(PREFIX + "batches/" + quote(batch_id, safe=""))["batch"]
        if batch["ended"] is not None and batch["state"] != "landing":
            return batch
        if on_progress is not None:
            on_progress(batch)
        time.sleep(interval)
        interval = min(0.25, interval * 1.5)


# -- formatting ------------------------------------------------------------------------------


def format_progress(batch: dict) -> str:
    """``[#####-----]  40/64  3 running  2 peers``."""
    finished = batch["done"] + batch["skipped"] + batch["failed"]
    fraction = finished / batch["jobs"] if batch["jobs"] else 1.0
    filled = int(fraction * BAR_WIDTH)
    bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"
    return (
        f"{bar}  {finished}/{batch['jobs']}  {batch['running']} running  "
        f"{len(batch['peers'])} peers  {format_duration(batch['elapsed'])}"
    )


def format_batch(batch: dict) -> str:
    """The end-of-``map`` report."""
    elapsed = batch["elapsed"] or 0.0
    ran = batch["done"]
    rate = f", {ran / elapsed:.2f} jobs/s" if elapsed > 0 and ran else ""
    lines = [
        f"{batch['jobs']} jobs: {batch['done']} done, {batch['skipped']} already done, "
        f"{batch['failed']} failed in {elapsed:.1f} s{rate}"
    ]
    if batch.get("error"):
        lines.append(f"error: {batch['error']}")
    for peer, count in sorted(batch["peers"].items()):
        lines.append(f"  {peer}  {count} results")
    for liar in batch["liars"]:
        lines.append(
            f"  LIAR {liar['peer']}: its result for {liar['job']} disagreed with the quorum"
        )
    for peer, why in sorted(batch["refusals"].items()):
        lines.append(f"  refused by {peer}: {why}")
    for failure in batch["failures"][:20]:
        detail = f": {failure['detail']}" if failure.get("detail") else ""
        lines.append(
            f"  failed {failure['input']}: {failure['reason']}{detail.splitlines()[0] if detail else ''}"
        )
    return "\n".join(lines)


def format_jobs(data: dict) -> str:
    """The ``peerctl jobs`` table."""
    jobs = data["jobs"]
    lines = []
    if jobs:
        rows = [("JOB", "FOR", "PEER", "STATE", "CPU", "FUEL", "RESULT")]
        for job in jobs:
            result = job["reason"] or "-"
            if job["reason"] == "exit":
                result = f"exit {job['exit_code']}"
            rows.append(
                (
                    job["id"],
                    "them" if job["side"] == "worker" else "us",
                    job["peer"],
                    job["state"],
                    f"{job['cpu']:.2f}s",
                    str(job["fuel_used"]),
                    result,
                )
            )
        lines.append(format_table(rows))
    else:
        lines.append("no jobs")
    for batch in data.get("batches", []):
        lines.append(f"batch {batch['id']}: {batch['state']}, {format_progress(batch)}")
    return "\n".join(lines)


def format_compute(status: dict) -> str:
    """The ``peerctl compute`` report."""
    limits = status["limits"]
    usage = status["usage"]
    return "\n".join(
        [
            f"lending:      {'yes' if status['serving'] else 'no'}"
            f"  ({status['running']}/{status['concurrency']} jobs running, "
            f"{status['served']} served, {status['refused']} refused)",
            f"allow:        {'any' if status['allow'] is None else ' '.join(status['allow'])}",
            f"per job:      fuel {limits['max_fuel']}, memory {format_bytes(limits['max_memory'])}, "
            f"{limits['max_seconds']:g} s, output {format_bytes(limits['max_output'])}",
            f"today:        {usage['cpu_seconds']:.1f} CPU s lent"
            + (f" of {usage['limit']:g}" if usage["limit"] else "")
            + (f" ({usage['per_peer_limit']:g} per peer)" if usage["per_peer_limit"] else ""),
            f"module cache: {format_bytes(status['cache']['bytes'])} of "
            f"{format_bytes(status['cache']['limit'])}",
        ]
    )


# -- commands ----------------------------------------------------------------------------------


class RunCommand(Command):
    name = "run"
    help = "run a WebAssembly job on another peer; its stdout to ours, its exit status ours"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("module", metavar="JOB.wasm", help="the module (.wasm or .wat)")
        parser.add_argument("job_args", nargs="*", metavar="ARG", help="the job's arguments")
        parser.add_argument("--stdin", metavar="FILE", help="the job's stdin (default: empty)")
        _job_options(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {**_job_body(args), "args": args.job_args}
        if args.stdin is not None:
            body["stdin"] = _absolute(args.stdin)
        batch = client.post(PREFIX + "run", body)["batch"]
        batch = _wait(client, batch["id"])
        result = batch.get("result") or {}
        if args.json:
            show(args, batch, str)
        else:
            if result.get("stdout"):
                sys.stdout.buffer.write(base64.b64decode(result["stdout"]))
                sys.stdout.flush()
        reason = result.get("reason")
        if reason in ("ok", "exit") and result.get("exit_code") is not None:
            return int(result["exit_code"]) & 0xFF
        why = batch.get("error") or reason or "no result"
        detail = result.get("detail") or "; ".join(
            f"{f['reason']}" for f in batch.get("failures", [])
        )
        refusals = "; ".join(f"{p}: {r}" for p, r in batch.get("refusals", {}).items())
        message = f"peerctl: job ended: {why}"
        if detail:
            message += f": {detail.splitlines()[-1]}"
        if refusals:
            message += f" (refused by {refusals})"
        print(message, file=sys.stderr)
        return EXIT_SANDBOX


class MapCommand(Command):
    name = "map"
    help = "run a job once per input (its stdin) across every compute peer; outputs to OUTDIR"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("module", metavar="JOB.wasm", help="the module (.wasm or .wat)")
        parser.add_argument("inputs", nargs="+", metavar="INPUT", help="one job per input file")
        parser.add_argument(
            "-o",
            "--outdir",
            required=True,
            metavar="OUTDIR",
            help="where INPUT's output lands, as NAME.out",
        )
        parser.add_argument(
            "--arg",
            action="append",
            default=[],
            dest="job_args",
            metavar="ARG",
            help="an argument for every job (repeat for several)",
        )
        _job_options(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {
            **_job_body(args),
            "args": args.job_args,
            "inputs": [_absolute(p) for p in args.inputs],
            "outdir": _absolute(args.outdir),
        }
        batch = client.post(PREFIX + "map", body)["batch"]
        tty = sys.stderr.isatty() and not args.json
        last = [0.0]

        def progress(b: dict) -> None:
            now = time.monotonic()
            if tty:
                print("\r" + format_progress(b), end="", file=sys.stderr, flush=True)
            elif now - last[0] >= 3.0 and not args.json:
                print(format_progress(b), file=sys.stderr, flush=True)
                last[0] = now

        try:
            batch = _wait(client, batch["id"], progress)
        except KeyboardInterrupt:
            client.delete(PREFIX + "batches/" + quote(batch["id"], safe=""))
            raise PeerctlError("interrupted; run the same map again to resume") from None
        if tty:
            print("\r" + format_progress(batch), file=sys.stderr)
        show(args, batch, format_batch)
        return EXIT_OK if batch["failed"] == 0 and not batch.get("error") else EXIT_API_ERROR


class JobsCommand(Command):
    name = "jobs"
    help = "list running and recent compute jobs, ours and other peers'"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        show(args, client.get(PREFIX + "jobs"), format_jobs)
        return EXIT_OK


class CancelJobCommand(Command):
    name = "cancel-job"
    help = "cancel a compute job or batch (an ID from peerctl jobs)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", metavar="JOB", help="a job ID (w1, r2) or a batch ID (b1)")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.delete(PREFIX + "jobs/" + quote(args.job, safe=""))
        show(args, data, lambda d: f"cancelled {d['cancelled']}")
        return EXIT_OK


class ComputeCommand(Command):
    name = "compute"
    help = "show what this peer lends: limits, jobs running, CPU lent today"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        show(args, client.get(PREFIX + "status"), format_compute)
        return EXIT_OK


COMMANDS: list[Command] = [
    RunCommand(),
    MapCommand(),
    JobsCommand(),
    CancelJobCommand(),
    ComputeCommand(),
]
