"""
``peerctl``: a thin client of the control API.

It speaks HTTP over the daemon's unix socket with the standard library only
(no Twisted, so it starts fast). Each subcommand is a :class:`Command`;
provider modules add theirs by appending to :data:`COMMANDS` (or by passing
their own list to :func:`main`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

API_PREFIX = "/api/v1/"
DEFAULT_TIMEOUT = 120.0

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class PeerctlError(Exception):
    """An error that ``peerctl`` reports as one line on stderr."""

    exit_code = EXIT_API_ERROR


class DaemonUnreachable(PeerctlError):
    """The daemon's control socket cannot be used."""

    exit_code = EXIT_NOT_RUNNING


class ApiClientError(PeerctlError):
    """The API answered with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` to a unix socket path."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("peerd", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Calls the control API on ``socket_path``; paths are relative to ``/api/v1/``."""

    def __init__(self, socket_path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def get(self, path: str) -> object:
        """``GET`` ``path``; the parsed JSON answer."""
        return self._request("GET", path)

    def post(self, path: str, body: object) -> object:
        """``POST`` ``body`` as JSON to ``path``; the parsed JSON answer."""
        return self._request("POST", path, body)

    def delete(self, path: str) -> object:
        """``DELETE`` ``path``; the parsed JSON answer."""
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, body: object = None) -> object:
        sock = self.socket_path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = _UnixHTTPConnection(sock, self.timeout)
        try:
            connection.request(method, API_PREFIX + path.lstrip("/"), data, headers)
            response = connection.getresponse()
            payload = response.read()
        except FileNotFoundError:
            raise DaemonUnreachable(f"peerd is not running (no control socket at {sock})") from None
        except ConnectionRefusedError:
            raise DaemonUnreachable(
                f"peerd is not running (control socket {sock} refuses connections)"
            ) from None
        except PermissionError:
            raise DaemonUnreachable(
                f"permission denied on control socket {sock} (run peerctl as the user running peerd)"
            ) from None
        except TimeoutError:
            raise DaemonUnreachable(
                f"peerd did not answer within {self.timeout:g}s (control socket {sock})"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise DaemonUnreachable(f"lost the connection to peerd on {sock}: {e}") from None
        finally:
            connection.close()
        try:
            value = json.loads(payload) if payload.strip() else None
        except ValueError:
            value = None
            if 200 <= response.status < 300:
                raise ApiClientError("peerd sent a response that is not JSON") from None
        if not 200 <= response.status < 300:
            if isinstance(value, dict) and isinstance(value.get("error"), str):
                raise ApiClientError(value["error"], response.status)
            raise ApiClientError(f"HTTP {response.status} {response.reason}", response.status)
        return value


# -- formatting ---------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``12.3 MiB`` ..."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_providers(providers: dict) -> str:
    """``{"files": "1"}`` as ``files/1``; ``-`` for none."""
    return ", ".join(f"{name}/{version}" for name, version in sorted(providers.items())) or "-"


def format_table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns separated by two spaces; the first row may be a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def format_peers(peers: list, now: float) -> str:
    """The ``peerctl peers`` table."""
    if not peers:
        return "no peers connected"
    rows = [("PEER", "ADDRESS", "DIR", "PROVIDERS", "CONNECTED")]
    rows += [
        (
            p["peer_id"],
            f"via relay {p['relay']}" if p.get("relay") else p["address"],
            p["direction"],
            format_providers(p.get("providers", {})),
            format_duration(now - p["since"]),
        )
        for p in peers
    ]
    return format_table(rows)


def _format_status_fields(status: object) -> str:
    if not isinstance(status, dict):
        return str(status)
    return " ".join(
        f"{k}={v}" for k, v in sorted(status.items()) if not isinstance(v, (dict, list))
    )


def format_provider_listing(data: dict) -> str:
    """The ``peerctl providers`` listing."""
    local = data.get("local", {})
    lines = ["local providers:"]
    if local:
        rows = [
            (name, str(info.get("version", "?")), _format_status_fields(info.get("status", {})))
            for name, info in sorted(local.items())
        ]
        lines.append(format_table(rows, indent="  "))
    else:
        lines.append("  none")
    peers = data.get("peers", {})
    lines.append("connected peers offer:")
    if peers:
        lines.extend(
            f"  {peer_id}  {format_providers(offer)}" for peer_id, offer in sorted(peers.items())
        )
    else:
        lines.append("  no peers connected")
    return "\n".join(lines)


def format_status(status: dict) -> str:
    """The ``peerctl status`` block."""
    c = status.get("connections", {})
    connections = f"{c.get('total', 0)} ({c.get('inbound', 0)} in, {c.get('outbound', 0)} out"
    connections += f", max {c.get('max', '?')})"
    providers = {n: p.get("version", "?") for n, p in status.get("providers", {}).items()}
    traffic = f"{format_bytes(status.get('bytes_in', 0))} in"
    traffic += f", {format_bytes(status.get('bytes_out', 0))} out"
    rows = [
        ("peer ID", [status["peer_id"]]),
        ("agent", [str(status.get("agent", "?"))]),
        ("uptime", [format_duration(status.get("uptime", 0))]),
        ("listen", status.get("listen") or ["-"]),
        ("addresses", status.get("addresses") or ["-"]),
        ("connections", [connections]),
        ("providers", [format_providers(providers)]),
        ("traffic", [traffic]),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, values in rows:
        for i, value in enumerate(values):
            lines.append(f"{(label + ':') if i == 0 else '':<{width}}{value}")
    return "\n".join(lines)


def show(args: argparse.Namespace, data: object, render: Callable[[object], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else as ``render(data)``."""
    if args.json:
        print(json.dumps(data, sort_keys=True, indent=2))
    else:
        print(render(data))


# -- commands -----------------------------------------------------------------


class Command:
    """
    One ``peerctl`` subcommand.

    Subclasses set ``name`` and ``help``, add their arguments in
    :meth:`add_arguments` and do their work in :meth:`run`, which prints the
    result (as JSON when ``args.json``) and returns the exit status.
    """

    name: str = ""
    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the subcommand's own arguments."""

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        """Do the work; raise :class:`PeerctlError` to fail with one line."""
        raise NotImplementedError


class IdCommand(Command):
    name = "id"
    help = "print this peer's PeerID"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get("id")
        show(args, data, lambda d: d["peer_id"])
        return EXIT_OK


class AddressCommand(Command):
    name = "address"
    help = "print the addresses other peers can dial, one per line"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get("address")
        show(args, data, lambda d: "\n".join(d["addresses"]))
        return EXIT_OK


class PeersCommand(Command):
    name = "peers"
    help = "list connected peers"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get("peers")
        show(args, data, lambda d: format_peers(d["peers"], time.time()))
        return EXIT_OK


class ConnectCommand(Command):
    name = "connect"
    help = "connect to a peer"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("address", metavar="ADDRESS", help="PEERID@host:port or host:port")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.post("peers", {"address": args.address})
        show(args, data, lambda d: f"connected to {d['peer']['peer_id']} ({d['peer']['address']})")
        return EXIT_OK


class ProvidersCommand(Command):
    name = "providers"
    help = "list local providers and what connected peers offer"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get("providers")
        show(args, data, format_provider_listing)
        return EXIT_OK


class StatusCommand(Command):
    name = "status"
    help = "show the daemon's status"

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        data = client.get("status")
        show(args, data, format_status)
        return EXIT_OK


COMMANDS: list[Command] = [
    IdCommand(),
    AddressCommand(),
    PeersCommand(),
    ConnectCommand(),
    ProvidersCommand(),
    StatusCommand(),
]

# The built-in providers' commands (files, relay, storage) append themselves to
# COMMANDS. Imported here, once Command and the formatters exist, so either module
# may be imported first.
import peerd.cli_files  # noqa: E402, F401
import peerd.cli_relay  # noqa: E402, F401
import peerd.cli_storage  # noqa: E402, F401
import peerd.cli_web  # noqa: E402, F401

# -- entry point --------------------------------------------------------------


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """The options accepted before and after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="the daemon's data dir (default: $PEERD_HOME or ~/.peerd)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help="control socket (default: DIR/control.sock)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the API's JSON",
    )
    return parser


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The ``peerctl`` argument parser for ``commands``."""
    parser = argparse.ArgumentParser(
        prog="peerctl",
        description="Control a running peerd through its control socket.",
        parents=[_common_options(suppress=False)],
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            parents=[_common_options(suppress=True)],
        )
        command.add_arguments(sub)
        sub.set_defaults(command_object=command)
    return parser


def socket_path(args: argparse.Namespace, environ: dict | None = None) -> Path:
    """``--socket``, else ``<data dir>/control.sock``; data dir from
    ``--data-dir``, ``$PEERD_HOME`` or ``~/.peerd``."""
    if args.socket:
        return Path(args.socket)
    environ = os.environ if environ is None else environ
    data_dir = args.data_dir or environ.get("PEERD_HOME") or "~/.peerd"
    return Path(data_dir).expanduser() / "control.sock"


def main(argv: list[str] | None = None, commands: Sequence[Command] | None = None) -> int:
    """Run ``peerctl`` with ``argv``; return the exit status."""
    parser = build_parser(COMMANDS if commands is None else commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    client = ControlClient(socket_path(args))
    try:
        return args.command_object.run(client, args)
    except PeerctlError as e:
        print(f"peerctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("peerctl: interrupted", file=sys.stderr)
        return 130
    except (KeyError, TypeError, AttributeError) as e:
        print(f"peerctl: unexpected answer from peerd ({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_API_ERROR


def run() -> None:
    """The console-script entry point."""
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `peerctl peers | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_API_ERROR)
