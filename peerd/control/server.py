"""
Serving the control API on a local endpoint.

The default endpoint is ``unix:<data_dir>/control.sock``; the socket is made
mode 0600 so only the daemon's user can talk to it. A socket file left by a
daemon that died is removed; one that still answers means another daemon
runs on the same data dir, and we refuse to start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from peerd.control.router import ControlResource, Router

SOCKET_MODE = 0o600
_PROBE_TIMEOUT = 1.0


class ControlSocketError(Exception):
    """The control socket path cannot be used."""


class ControlSocketInUse(ControlSocketError):
    """Another process answers on the control socket."""


def _endpoint_args(endpoint_string: str) -> list[str]:
    """Split an endpoint description on ``:``, honouring ``\\`` escapes."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(endpoint_string)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unix_socket_path(endpoint_string: str) -> str | None:
    """The filesystem path of a ``unix:`` endpoint, else ``None``."""
    kind, *args = _endpoint_args(endpoint_string)
    if kind != "unix":
        return None
    positional = [a for a in args if "=" not in a]
    keywords = dict(a.split("=", 1) for a in args if "=" in a)
    path = keywords.get("address", positional[0] if positional else None)
    if not path or path.startswith(("@", "\0")):  # abstract namespace: no file
        return None
    return path


def prepare_unix_socket(endpoint_string: str) -> None:
    """
    Make a ``unix:`` endpoint's path ready to listen on.

    A socket file that nothing answers on is removed (left by a daemon that
    died). Other endpoints are left alone.

    :raises ControlSocketInUse: something answers on the socket.
    :raises ControlSocketError: the path exists and is not a socket.
    """
    path = unix_socket_path(endpoint_string)
    if path is not None:
        _prepare_socket_path(path)


def _prepare_socket_path(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"control socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nobody listens
    except TimeoutError:
        raise ControlSocketInUse(
            f"another peerd is already running (control socket {path} accepts but is busy)"
        ) from None
    else:
        raise ControlSocketInUse(
            f"another peerd is already running (control socket {path} answers)"
        )
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class _QuietSite(Site):
    """A Site that writes no access log."""

    noisy = False

    def log(self, request) -> None:
        pass


def control_site(router: Router) -> Site:
    """The ``twisted.web`` site serving ``router`` under ``/api/v1/``."""
    return _QuietSite(ControlResource(router), logPath=None)


@implementer(IStreamServerEndpoint)
class _PrivateUnixEndpoint:
    """Prepares the socket path before listening and makes it 0600 after."""

    def __init__(self, endpoint: IStreamServerEndpoint, path: str, mode: int | None) -> None:
        self._endpoint = endpoint
        self._path = path
        self._mode = mode

    def listen(self, factory) -> Deferred:
        try:
            _prepare_socket_path(self._path)
        except (ControlSocketError, OSError):
            return fail()
        d = self._endpoint.listen(factory)
        if self._mode is not None:
            d.addCallback(self._chmod)
        return d

    def _chmod(self, port: object) -> object:
        os.chmod(self._path, self._mode)
        return port


def control_service(
    reactor, endpoint_string: str, router: Router, resource: Resource | None = None
) -> StreamServerEndpointService:
    """
    A service serving ``router`` (or the whole ``resource`` tree, when
    given) on ``endpoint_string``.

    A ``unix:`` endpoint without ``mode=`` gets mode 0600 (set by Twisted
    before it listens, and again once listening); an explicit ``mode=`` is
    respected. A stale socket file is removed when the service starts;
    ``startService`` raises :class:`ControlSocketInUse` if another daemon
    answers, and ``CannotListenError`` if it cannot listen.
    """
    path = unix_socket_path(endpoint_string)
    endpoint: IStreamServerEndpoint
    if path is None:
        endpoint = serverFromString(reactor, endpoint_string)
    else:
        has_mode = any(a.startswith("mode=") for a in _endpoint_args(endpoint_string)[1:])
        if not has_mode:
            endpoint_string += f":mode={SOCKET_MODE:o}"
        endpoint = _PrivateUnixEndpoint(
            serverFromString(reactor, endpoint_string), path, None if has_mode else SOCKET_MODE
        )
    site = control_site(router) if resource is None else _QuietSite(resource, logPath=None)
    service = StreamServerEndpointService(endpoint, site)
    # As twisted.application.strports.service does: a listen that fails at
    # once (socket in use, bad path) raises from startService, so twistd
    # stops with the message instead of running without its control socket.
    service._raiseSynchronously = True
    return service
