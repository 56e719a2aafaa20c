"""The core ``peerctl`` commands: identity, peers, providers, status."""

from __future__ import annotations

import argparse
import time

from peerd.peerctl.client import EXIT_OK, ControlClient
from peerd.peerctl.command import Command
from peerd.peerctl.output import format_peers, format_provider_listing, format_status, show


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
