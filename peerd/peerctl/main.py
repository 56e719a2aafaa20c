"""
``peerctl``'s entry point: the argument parser and :func:`main`.

The commands are the core ones plus each built-in provider's, joined here
explicitly from each provider's ``cli`` module.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from peerd.peerctl import core, web
from peerd.peerctl.client import (
    EXIT_API_ERROR,
    EXIT_USAGE,
    ControlClient,
    PeerctlError,
)
from peerd.peerctl.command import Command
from peerd.providers.compute import cli as compute_cli
from peerd.providers.files import cli as files_cli
from peerd.providers.relay import cli as relay_cli
from peerd.providers.storage import cli as storage_cli

COMMANDS: list[Command] = [
    *core.COMMANDS,
    *web.COMMANDS,
    *files_cli.COMMANDS,
    *storage_cli.COMMANDS,
    *relay_cli.COMMANDS,
    *compute_cli.COMMANDS,
]
"""Every ``peerctl`` subcommand, in the order ``--help`` lists them."""


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
