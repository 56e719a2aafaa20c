"""
Tests for serving the control API: socket preparation and the service.

These use real unix sockets in a short temporary directory (unix socket paths
are limited to about 100 bytes).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.selectreactor import SelectReactor
from twisted.logger import capturedLogs

from peerd.control.router import Router
from peerd.control.server import (
    ControlSocketError,
    ControlSocketInUse,
    control_service,
    control_site,
    prepare_unix_socket,
    unix_socket_path,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="peerd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stale_socket_removed(short_dir: Path) -> None:
    """A socket file nobody listens on (left by a dead daemon) is removed."""
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    prepare_unix_socket(f"unix:{path}")
    assert not path.exists()


def test_live_socket_refused(short_dir: Path) -> None:
    """A socket something answers on means another daemon: ControlSocketInUse, file kept."""
    path = short_dir / "control.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(ControlSocketInUse) as info:
            prepare_unix_socket(f"unix:{path}:mode=600")
        assert str(info.value) == (
            f"another peerd is already running (control socket {path} answers)"
        )
        assert path.exists()
    finally:
        live.close()


def test_missing_socket_and_other_endpoints(short_dir: Path) -> None:
    """No socket file, or a non-unix endpoint: nothing to do."""
    prepare_unix_socket(f"unix:{short_dir / 'absent.sock'}")
    prepare_unix_socket("tcp:7846:interface=127.0.0.1")


def test_regular_file_not_removed(short_dir: Path) -> None:
    """A path that is not a socket is never removed."""
    path = short_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="is not a socket"):
        prepare_unix_socket(f"unix:{path}")
    assert path.read_text() == "precious"


@pytest.mark.parametrize(
    "endpoint, expected",
    [
        ("unix:/run/p/control.sock", "/run/p/control.sock"),
        ("unix:address=/run/p/c.sock:mode=600", "/run/p/c.sock"),
        ("unix:/run/with\\:colon.sock:lockfile=0", "/run/with:colon.sock"),
        ("unix:@abstract", None),
        ("tcp:7846", None),
    ],
)
def test_unix_socket_path(endpoint: str, expected: str | None) -> None:
    """The socket path is read from positional or ``address=`` form, with escapes."""
    assert unix_socket_path(endpoint) == expected


def test_control_site_is_quiet() -> None:
    """The site logs no factory start/stop noise and no access log."""
    site = control_site(Router())
    assert site.noisy is False


def test_control_service_listens_with_mode_0600(short_dir: Path) -> None:
    """The service removes a stale socket, listens on the unix path, and the socket
    file is mode 0600; stopping removes it."""
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    reactor = SelectReactor()  # a private reactor, never run: only listen/stop
    service = control_service(reactor, f"unix:{path}", Router())
    assert isinstance(service, StreamServerEndpointService)
    with capturedLogs() as events:
        service.startService()
    assert [e for e in events if "log_failure" in e] == []
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # it is listening
        probe.close()
    finally:
        stopped = service.stopService()
        for _ in range(10):
            reactor.iterate(0)
    assert stopped.called
    assert not path.exists()


def test_control_service_refuses_live_socket(short_dir: Path) -> None:
    """Starting the service on a socket another process answers on raises
    ControlSocketInUse at once (so twistd stops) and leaves that socket alone."""
    path = short_dir / "control.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        reactor = SelectReactor()
        service = control_service(reactor, f"unix:{path}", Router())
        with pytest.raises(ControlSocketInUse, match="already running"):
            service.startService()
        assert path.exists()
    finally:
        live.close()
