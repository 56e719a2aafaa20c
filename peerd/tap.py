"""
``twistd peerd``: command-line options and the service tree.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from peerd.config import ConfigError, Settings, load_settings
from peerd.identity import IdentityError, load_or_create_identity
from peerd.plugin_loader import discover_factories, select_providers


class Options(usage.Options):
    """Options of ``twistd peerd``."""

    synopsis = "[--config FILE] [--data-dir DIR] [--listen ENDPOINT]"
    longdesc = (
        "Run a peerd peer. With no options it uses built-in defaults: data dir "
        "$PEERD_HOME or ~/.peerd, peers on tcp:7845, control API on "
        "unix:<data_dir>/control.sock. See conf/peerd.ini for every setting."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "INI config file (see conf/peerd.ini); built-in defaults without it.",
        ],
        ["data-dir", "d", None, "Data directory; overrides [peer] data_dir and $PEERD_HOME."],
        [
            "listen",
            "l",
            None,
            "Twisted server endpoint for peers (e.g. tcp:7845), or 'none'; "
            "overrides [peer] listen.",
        ],
    ]

    settings: Settings

    def postOptions(self) -> None:
        """Load and validate the configuration now, before anything starts."""
        try:
            self.settings = load_settings(
                self["config"], data_dir=self["data-dir"], listen=self["listen"]
            )
        except ConfigError as e:
            _fatal(str(e))


def _fatal(message: str) -> None:
    print(f"peerd: {message}", file=sys.stderr)
    raise SystemExit(1)


def makeService(options: Options) -> IService:
    """Build the peer: identity, providers, service tree."""
    from twisted.internet import reactor

    from peerd.control.server import ControlSocketError
    from peerd.service import PeerService, StartupError, ensure_data_dir
    from peerd.workers import WorkerPool

    settings = options.settings
    try:
        selected = select_providers(settings, discover_factories())  # config errors first
        ensure_data_dir(settings.peer.data_dir)
        identity = load_or_create_identity(settings.peer.data_dir)
        workers = WorkerPool(reactor, settings.peer.worker_threads)
        service: Any = PeerService(settings, identity, selected, reactor, workers)
    except (ConfigError, IdentityError, ControlSocketError, StartupError, OSError) as e:
        _fatal(str(e))
    root = _ExitOnStartupError(reactor)
    service.setServiceParent(root)
    return root


class _ExitOnStartupError(MultiService):
    """
    The root service: a start-up failure becomes one line and exit status 1,
    and SIGTERM is a clean stop with exit status 0 (twistd's own handler
    re-raises the signal after shutdown, which exits with -15).
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        # After the reactor has installed its own handlers, which run later.
        self._reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._terminate)

    def _terminate(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._reactor.stop)

    def privilegedStartService(self) -> None:
        from peerd.service import StartupError

        try:
            super().privilegedStartService()
        except StartupError as e:
            _fatal(str(e))
