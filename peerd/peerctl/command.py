"""The base class of every ``peerctl`` subcommand, built-in or a provider's."""

from __future__ import annotations

import argparse

from peerd.peerctl.client import ControlClient


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
