"""
``peerctl`` subcommands of the files provider: ``share``, ``shared``,
``unshare``, ``get``, ``downloads`` and ``cancel``.

They call the provider's routes under ``/api/v1/providers/files/`` (see
``docs/api.rst``). Like the rest of ``peerctl`` this module uses the standard
library only. ``peerd.peerctl.main`` joins :data:`COMMANDS` with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO
from urllib.parse import quote

from peerd.peerctl.client import EXIT_API_ERROR, EXIT_OK, ControlClient
from peerd.peerctl.command import Command
from peerd.peerctl.output import format_bytes, format_duration, format_table, show

PREFIX = "providers/files/"
SHARE_TIMEOUT = 24 * 3600.0
"""How long ``share`` waits for the daemon to hash a share."""
POLL_INTERVAL = 0.25
"""Seconds between two polls of a download's status."""
PLAIN_EVERY = 3.0
"""Seconds between two progress lines when progress is not a terminal."""
BAR_WIDTH = 24
EXIT_INTERRUPTED = 130

TERMINAL_STATES = ("complete", "failed", "cancelled")


def _route(*parts: str) -> str:
    """A files-provider API path; each part is quoted as one path segment."""
    return PREFIX + "/".join(quote(p, safe="") for p in parts)


# -- formatting -----------------------------------------------------------------------


def describe_state(status: dict) -> str:
    """``downloading``, ``finding sources: no sources yet``, ``failed: <error>`` ..."""
    state = status["state"]
    text = state.replace("-", " ")
    detail = status.get("detail")
    if detail and detail != state:
        text += f": {detail}"
    return text


def format_percent(status: dict) -> str:
    """Whole percent done (never 100% before it is complete), ``-`` if unknown."""
    size = status.get("size")
    if status["state"] == "complete":
        return "100%"
    if not size:
        return "-"
    return f"{min(99, int(status.get('bytes_done', 0) * 100 / size))}%"


def format_rate(rate: float | None) -> str:
    """``1.5 MiB/s``."""
    return f"{format_bytes(rate or 0)}/s"


def format_eta(eta: float | None) -> str:
    """``1m12s``, ``?`` when unknown."""
    return "?" if eta is None else format_duration(eta)


def format_peer_count(n: int) -> str:
    """``1 peer``, ``3 peers``."""
    return f"{n} peer{'' if n == 1 else 's'}"


def format_progress(status: dict, bar: bool = False) -> str:
    """
    One progress line: (bar,) bytes done/total, percent, rate, peers, ETA,
    then what it is waiting for when it is not simply downloading.
    """
    size = status.get("size")
    done = status.get("bytes_done") or 0
    total = "?" if size is None else format_bytes(size)
    parts = [
        f"{format_bytes(done)} / {total}",
        format_percent(status),
        format_rate(status.get("rate")),
        format_peer_count(status.get("peers") or 0),
        f"ETA {format_eta(status.get('eta'))}",
    ]
    if bar:
        fraction = 1.0 if status["state"] == "complete" else min(1.0, done / size) if size else 0.0
        filled = int(fraction * BAR_WIDTH)
        parts.insert(0, "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
    if status["state"] != "downloading":
        parts.append(describe_state(status))
    return "  ".join(parts)


def format_shares(shares: list) -> str:
    """The ``peerctl shared`` table."""
    if not shares:
        return "nothing shared"
    rows = [("CONTENT ID", "NAME", "SIZE", "BLOCKS", "STATUS")]
    rows += [
        (
            s["cid"],
            s["name"],
            format_bytes(s["size"]),
            f"{s['blocks_held']}/{s['blocks']}",
            "ok" if s["status"] == "sharing" else s["status"],
        )
        for s in shares
    ]
    return format_table(rows)


def format_downloads(downloads: list) -> str:
    """The ``peerctl downloads`` table."""
    if not downloads:
        return "no downloads"
    rows = [("CONTENT ID", "NAME", "STATE", "DONE", "RATE", "PEERS", "ETA")]
    for d in downloads:
        active = d["state"] not in TERMINAL_STATES
        rows.append(
            (
                d["cid"],
                d.get("name") or "?",
                describe_state(d),
                format_percent(d),
                format_rate(d.get("rate")) if active else "-",
                str(d.get("peers") or 0) if active else "-",
                format_eta(d.get("eta")) if active else "-",
            )
        )
    return format_table(rows)


# -- progress display -----------------------------------------------------------------


class ProgressDisplay:
    """
    Shows a download's progress on ``stream``: on a terminal one line redrawn
    in place, otherwise one plain line every ``plain_every`` seconds (and
    whenever the state changes).
    """

    def __init__(
        self,
        stream: TextIO,
        tty: bool,
        clock: Callable[[], float],
        plain_every: float = PLAIN_EVERY,
        width: int = 80,
    ) -> None:
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self.plain_every = plain_every
        self.width = width
        self._drawn = 0  # length of the line drawn in place, 0 if none
        self._last_plain: float | None = None
        self._last_state: str | None = None

    def update(self, status: dict) -> None:
        """Show ``status``."""
        if self.tty:
            line = format_progress(status, bar=True)[: max(1, self.width - 1)]
            self.stream.write("\r" + line + " " * max(0, self._drawn - len(line)))
            self._drawn = len(line)
        else:
            now = self.clock()
            due = self._last_plain is None or now - self._last_plain >= self.plain_every
            if not due and status["state"] == self._last_state:
                return
            self._last_plain = now
            self.stream.write(format_progress(status) + "\n")
        self._last_state = status["state"]
        self.stream.flush()

    def end(self) -> None:
        """End the line drawn in place, so that what follows starts on its own line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0


class _NoDisplay:
    def update(self, status: dict) -> None:
        pass

    def end(self) -> None:
        pass


# -- commands -------------------------------------------------------------------------


class ShareCommand(Command):
    name = "share"
    help = "share a file or directory; prints its content ID"

    def __init__(self, timeout: float = SHARE_TIMEOUT) -> None:
        self.timeout = timeout

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="PATH", help="the file or directory to share")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        # Hashing a large share takes a while: wait longer than usual.
        patient = ControlClient(client.socket_path, timeout=self.timeout)
        data = patient.post(_route("shares"), {"path": os.path.abspath(args.path)})
        if args.json:
            show(args, data, str)
            return EXIT_OK
        share = data["share"]
        print(share["cid"])
        files = f"{share['files']} files, " if share["kind"] == "dir" else ""
        print(
            f"shared {share['name']} ({format_bytes(share['size'])}, "
            f"{files}{share['blocks']} blocks)",
            file=sys.stderr,
        )
        return EXIT_OK


class SharedCommand(Command):
    name = "shared"
    help = "list what this peer shares"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get(_route("shares"))
        show(args, data, lambda d: format_shares(d["shares"]))
        return EXIT_OK


class UnshareCommand(Command):
    name = "unshare"
    help = "stop sharing a content ID"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("cid", metavar="ID", help="the content ID")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.delete(_route("shares", args.cid))
        show(args, data, lambda d: f"stopped sharing {d['removed']}")
        return EXIT_OK


class GetCommand(Command):
    """
    ``peerctl get``: start a download, then follow it until it ends.

    ``sleep``, ``clock``, ``isatty`` and ``terminal_width`` are the outside
    world, injected so tests need no real waiting or terminal. Progress goes
    to stderr (stdout carries only the result, so ``$(peerctl get ID)`` is
    the final path); ``isatty`` defaults to asking stderr.
    """

    name = "get"
    help = "download a content ID and wait for it"

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        isatty: Callable[[], bool] | None = None,
        terminal_width: Callable[[], int] | None = None,
        interval: float = POLL_INTERVAL,
        plain_every: float = PLAIN_EVERY,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self.isatty = isatty or (lambda: sys.stderr.isatty())
        self.terminal_width = terminal_width or (lambda: shutil.get_terminal_size().columns)
        self.interval = interval
        self.plain_every = plain_every

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("cid", metavar="ID", help="the content ID")
        parser.add_argument(
            "-o",
            "--output",
            metavar="PATH",
            help="where to put it (default: its own name in the current directory)",
        )
        parser.add_argument(
            "--force", action="store_true", help="replace what is already at the destination"
        )
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="return once the daemon has started the download",
        )
        parser.add_argument("-q", "--quiet", action="store_true", help="show no progress")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        body = {
            "cid": args.cid,
            "destination": os.path.abspath(args.output) if args.output else None,
            "directory": None if args.output else os.getcwd(),
            "force": args.force,
        }
        data = client.post(_route("downloads"), body)
        status = data["download"]
        if args.no_wait:
            show(args, data, lambda d: f"downloading {d['download']['cid']}")
            return EXIT_OK
        cid = status["cid"]
        display = self._display(args)
        try:
            while status["state"] not in TERMINAL_STATES:
                display.update(status)
                self.sleep(self.interval)
                status = client.get(_route("downloads", cid))["download"]
        except KeyboardInterrupt:
            display.end()
            print(
                f"peerctl: download continues in the daemon; `peerctl cancel {cid}` stops it",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        if status["state"] == "complete":
            display.update(status)
        display.end()
        return self._report(args, status)

    def _display(self, args: argparse.Namespace) -> ProgressDisplay | _NoDisplay:
        if args.quiet or args.json:
            return _NoDisplay()
        tty = self.isatty()
        width = self.terminal_width() if tty else 80
        return ProgressDisplay(sys.stderr, tty, self.clock, self.plain_every, width)

    def _report(self, args: argparse.Namespace, status: dict) -> int:
        if args.json:
            print(json.dumps({"download": status}, sort_keys=True, indent=2))
        state = status["state"]
        if state == "complete":
            if not args.json:
                print(status["path"])
            return EXIT_OK
        if state == "failed":
            reason = status.get("error") or status.get("detail") or "unknown error"
            print(f"peerctl: download of {status['cid']} failed: {reason}", file=sys.stderr)
        else:
            print(f"peerctl: download of {status['cid']} was cancelled", file=sys.stderr)
        return EXIT_API_ERROR


class DownloadsCommand(Command):
    name = "downloads"
    help = "list downloads and their progress"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get(_route("downloads"))
        show(args, data, lambda d: format_downloads(d["downloads"]))
        return EXIT_OK


class CancelCommand(Command):
    name = "cancel"
    help = "cancel a download"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("cid", metavar="ID", help="the content ID")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.delete(_route("downloads", args.cid))
        show(args, data, lambda d: f"cancelled {d['cancelled']}")
        return EXIT_OK


COMMANDS: list[Command] = [
    ShareCommand(),
    SharedCommand(),
    UnshareCommand(),
    GetCommand(),
    DownloadsCommand(),
    CancelCommand(),
]
