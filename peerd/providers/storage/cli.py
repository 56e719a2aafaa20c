"""
``peerctl`` subcommands of the storage provider: ``store``, ``retrieve``,
``check``, ``repair``, ``renew`` and ``storage``.

They call the provider's routes under ``/api/v1/providers/storage/`` (see
``docs/api.rst``). Standard library only, like the rest of ``peerctl``.
``peerd.peerctl.main`` joins :data:`COMMANDS` with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from peerd.peerctl.client import EXIT_API_ERROR, EXIT_OK, ControlClient
from peerd.peerctl.command import Command
from peerd.peerctl.output import format_bytes, format_duration, format_table, show

PREFIX = "providers/storage/"
POLL_INTERVAL = 0.25
PLAIN_EVERY = 3.0
EXIT_INTERRUPTED = 130


def format_job_progress(job: dict) -> str:
    """``store: 12.0 MiB / 256.0 MiB  4%  30.1 MiB/s  uploading``."""
    size = job.get("size") or 0
    done = job.get("bytes_done") or 0
    percent = "100%" if job["state"] == "complete" else f"{int(done * 100 / size) if size else 0}%"
    return "  ".join(
        [
            f"{job['kind']}: {format_bytes(done)} / {format_bytes(size)}",
            percent,
            f"{format_bytes(job.get('rate') or 0)}/s",
            job.get("detail") or job["state"],
        ]
    )


def format_check(check: dict) -> str:
    """The ``peerctl check`` report."""
    lines = [
        f"storage index {check['storage_index']}: {check['needed']}-of-{check['total']}, "
        f"{format_bytes(check['size'])}",
    ]
    if check["shares"]:
        rows = [("SHARE", "PEER", "STATUS")]
        for s in sorted(check["shares"], key=lambda s: (s["share"], s["peer"])):
            status = s["status"] + (f": {s['why']}" if s.get("why") else "")
            rows.append((str(s["share"]), s["peer"], status))
        lines.append(format_table(rows))
    else:
        lines.append("no shares found")
    health = "healthy" if check["healthy"] else f"missing shares {check['missing']}"
    lines.append(
        f"{check['good_shares']} of {check['total']} shares sound on "
        f"{check['peers_asked']} storage peers asked; "
        f"{'retrievable' if check['retrievable'] else 'NOT retrievable'}; {health}"
    )
    return "\n".join(lines)


def format_storage(status: dict) -> str:
    """The ``peerctl storage`` report."""
    lines = [
        f"quota:      {format_bytes(status['quota'])} "
        f"({format_bytes(status['used'])} used, {format_bytes(status['reserved'])} reserved, "
        f"{format_bytes(status['available'])} available)",
        f"shares:     {status['shares']} in {status['indexes']} storage indexes",
        f"limits:     max_share_size {format_bytes(status['max_share_size'])}, "
        f"min_free_disk {format_bytes(status['min_free_disk'])}",
        f"found:      {status['corrupt_found']} corrupt, "
        f"{status['expired_collected']} expired and collected, {status['refused']} refused",
    ]
    owners = status.get("owners") or {}
    if owners:
        rows = [("OWNER", "INDEXES", "SHARES", "BYTES")]
        for owner, o in sorted(owners.items(), key=lambda kv: -kv[1]["bytes"]):
            rows.append((owner, str(o["indexes"]), str(o["shares"]), format_bytes(o["bytes"])))
        lines.append(format_table(rows))
    else:
        lines.append("no shares held for anyone")
    return "\n".join(lines)


class _JobCommand(Command):
    """A command that starts a job and follows it (progress on stderr) until it ends."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        isatty: Callable[[], bool] | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self.isatty = isatty or (lambda: sys.stderr.isatty())
        self.interval = interval

    def follow(self, client: ControlClient, args: argparse.Namespace, job: dict) -> dict:
        """Poll the job until it ends; show progress unless quiet."""
        quiet = getattr(args, "quiet", False) or args.json
        tty = self.isatty()
        last = None
        drawn = False
        try:
            while job["state"] == "running":
                if not quiet:
                    now = self.clock()
                    if tty:
                        sys.stderr.write("\r" + format_job_progress(job)[:79].ljust(79))
                        drawn = True
                    elif last is None or now - last >= PLAIN_EVERY:
                        sys.stderr.write(format_job_progress(job) + "\n")
                        last = now
                    sys.stderr.flush()
                self.sleep(self.interval)
                job = client.get(PREFIX + f"jobs/{job['id']}")["job"]
        except KeyboardInterrupt:
            if drawn:
                sys.stderr.write("\n")
            print(f"peerctl: the {job['kind']} continues in the daemon", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None
        if drawn:
            sys.stderr.write("\n")
        if not quiet and job["state"] == "complete":
            print(format_job_progress(job), file=sys.stderr)
        return job

    def fail(self, job: dict) -> int:
        """Report a failed job."""
        print(f"peerctl: {job['kind']} failed: {job.get('error')}", file=sys.stderr)
        return EXIT_API_ERROR


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="show no progress")


def _lease(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease", type=float, default=31, metavar="DAYS", help="lease length (default 31 days)"
    )


class StoreCommand(_JobCommand):
    name = "store"
    help = "store a file on other peers, encrypted and erasure-coded; prints its capability"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="PATH", help="the file to store")
        parser.add_argument("--needed", type=int, default=3, metavar="K", help="shares needed (3)")
        parser.add_argument("--total", type=int, default=10, metavar="N", help="shares made (10)")
        _lease(parser)
        parser.add_argument(
            "--allow-doubling",
            action="store_true",
            help="put more than one share on a peer when there are fewer than N storage peers",
        )
        _quiet(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {
            "path": os.path.abspath(args.path),
            "needed": args.needed,
            "total": args.total,
            "lease_days": args.lease,
            "allow_doubling": args.allow_doubling,
        }
        job = self.follow(client, args, client.post(PREFIX + "store", body)["job"])
        if args.json:
            print(json.dumps({"job": job}, sort_keys=True, indent=2))
        if job["state"] != "complete":
            return self.fail(job)
        if not args.json:
            result = job["result"]
            print(result["capability"])
            print(
                f"stored {format_bytes(result['size'])} as {result['needed']}-of-{result['total']} "
                f"shares on {result['peers']} peers",
                file=sys.stderr,
            )
        return EXIT_OK


class RetrieveCommand(_JobCommand):
    name = "retrieve"
    help = "retrieve stored data by its capability; exit 0 only when complete and verified"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("capability", metavar="CAP", help="the pdcap1-... capability")
        parser.add_argument("-o", "--output", metavar="PATH", required=True, help="where to write")
        parser.add_argument("--force", action="store_true", help="replace an existing file")
        _quiet(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {
            "capability": args.capability,
            "destination": os.path.abspath(args.output),
            "force": args.force,
        }
        job = self.follow(client, args, client.post(PREFIX + "retrieve", body)["job"])
        if args.json:
            print(json.dumps({"job": job}, sort_keys=True, indent=2))
        if job["state"] != "complete":
            return self.fail(job)
        result = job["result"]
        for c in result.get("corrupt", []):
            print(
                f"peerctl: skipped corrupt share {c['share']} on {c['peer']}: {c['why']}",
                file=sys.stderr,
            )
        if not args.json:
            print(result["path"])
        return EXIT_OK


class CheckCommand(Command):
    name = "check"
    help = "which peers hold which shares of a capability; retrievable? healthy?"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("capability", metavar="CAP")
        parser.add_argument(
            "--verify", action="store_true", help="read and verify every block of every share"
        )

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        patient = ControlClient(client.socket_path, timeout=3600)
        data = patient.post(
            PREFIX + "check", {"capability": args.capability, "verify": args.verify}
        )
        show(args, data, lambda d: format_check(d["check"]))
        return EXIT_OK if data["check"]["retrievable"] else EXIT_API_ERROR


class RepairCommand(_JobCommand):
    name = "repair"
    help = "re-create missing shares of a capability on peers that lack one"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("capability", metavar="CAP")
        _lease(parser)
        parser.add_argument("--allow-doubling", action="store_true")
        _quiet(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {
            "capability": args.capability,
            "lease_days": args.lease,
            "allow_doubling": args.allow_doubling,
        }
        job = self.follow(client, args, client.post(PREFIX + "repair", body)["job"])
        if args.json:
            print(json.dumps({"job": job}, sort_keys=True, indent=2))
        if job["state"] != "complete":
            return self.fail(job)
        if not args.json:
            repaired = job["result"]["repaired"]
            if not repaired:
                print("healthy: nothing to repair")
            for r in repaired:
                print(f"share {r['share']} -> {r['peer']}")
        return EXIT_OK


class RenewCommand(Command):
    name = "renew"
    help = "extend this peer's leases on the shares of a capability"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("capability", metavar="CAP")
        _lease(parser)

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.post(
            PREFIX + "renew", {"capability": args.capability, "lease_days": args.lease}
        )

        def render(d: dict) -> str:
            r = d["renew"]
            return (
                f"renewed on {r['renewed']} of {len(r['servers'])} peers holding shares "
                f"for {format_duration(r['lease_seconds'])}"
            )

        show(args, data, render)
        return EXIT_OK if data["renew"]["renewed"] else EXIT_API_ERROR


class StorageCommand(Command):
    name = "storage"
    help = "this peer as a storage server: quota, used, shares held, by whom"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get(PREFIX + "status")
        show(args, data, format_storage)
        return EXIT_OK


COMMANDS: list[Command] = [
    StoreCommand(),
    RetrieveCommand(),
    CheckCommand(),
    RepairCommand(),
    RenewCommand(),
    StorageCommand(),
]
