"""
Tests for ``peerctl`` (``peerd.peerctl``), against a canned stdlib HTTP server on a
unix socket in a short temporary directory.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from peerd.peerctl.client import (
    EXIT_API_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    ApiClientError,
    ControlClient,
)
from peerd.peerctl.command import Command
from peerd.peerctl.main import main
from peerd.peerctl.output import format_bytes, format_duration, format_peers

PEER_A = "AEAQCA-IBAEAQ-CAIBAE-AQCAIB-AEAQCA-IB4BWQ"
PEER_B = "AIBAEA-QCAIBA-EAQCAI-BAEAQC-AIBAEA-QCDSMQ"


def peer(since: float) -> dict:
    return {
        "peer_id": PEER_B,
        "address": "10.0.0.2:7845",
        "direction": "outbound",
        "providers": {"files": "1", "relay": "2"},
        "listen_addresses": [f"{PEER_B}@10.0.0.2:7845"],
        "agent": "peerd/0.1",
        "since": since,
        "bytes_in": 1,
        "bytes_out": 2,
    }


STATUS = {
    "peer_id": PEER_A,
    "agent": "peerd",
    "version": "0.1.0",
    "uptime": 3725.0,
    "listen": ["tcp:7845"],
    "addresses": [f"{PEER_A}@10.0.0.1:7845", f"{PEER_A}@[fd00::1]:7845"],
    "connections": {"total": 3, "inbound": 2, "outbound": 1, "max": 64},
    "providers": {"files": {"version": "1", "status": {}}},
    "bytes_in": 1536,
    "bytes_out": 5 * 1024 * 1024,
}


class FakeDaemon:
    """A canned control API: ``routes[(method, path)] = (status, body)``."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                daemon.requests.append((self.command, self.path, self.rfile.read(length)))
                status, body = daemon.routes.get(
                    (self.command, self.path), (404, {"error": f"no such API route: {self.path}"})
                )
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = socketserver.UnixStreamServer(str(socket_path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(data_dir / "control.sock")
    fake.routes[("GET", "/api/v1/id")] = (200, {"peer_id": PEER_A, "addresses": []})
    yield fake
    fake.close()


def run(data_dir: Path, *argv: str) -> int:
    return main(["--data-dir", str(data_dir), *argv])


# -- commands and output --------------------------------------------------------------


def test_id(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``id`` prints the PeerID alone and exits 0."""
    assert run(data_dir, "id") == 0
    assert capsys.readouterr().out == PEER_A + "\n"
    assert daemon.requests == [("GET", "/api/v1/id", b"")]


def test_json_option_either_side(
    daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--json`` before or after the subcommand prints the API's JSON, sorted and indented."""
    expected = json.dumps({"addresses": [], "peer_id": PEER_A}, indent=2) + "\n"
    assert main(["--json", "--data-dir", str(data_dir), "id"]) == 0
    assert capsys.readouterr().out == expected
    assert main(["id", "--data-dir", str(data_dir), "--json"]) == 0
    assert capsys.readouterr().out == expected


def test_address(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``address`` prints one address per line."""
    daemon.routes[("GET", "/api/v1/address")] = (200, {"addresses": STATUS["addresses"]})
    assert run(data_dir, "address") == 0
    assert capsys.readouterr().out.splitlines() == STATUS["addresses"]


def test_peers_table(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``peers`` prints a header and one aligned row per peer."""
    daemon.routes[("GET", "/api/v1/peers")] = (200, {"peers": [peer(time.time() - 200)]})
    assert run(data_dir, "peers") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["PEER", "ADDRESS", "DIR", "PROVIDERS", "CONNECTED"]
    assert row.split()[:5] == [PEER_B, "10.0.0.2:7845", "outbound", "files/1,", "relay/2"]
    assert row.split()[5].startswith("3m2")
    assert row.index("10.0.0.2") == header.index("ADDRESS")


def test_no_peers(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``peers`` with nobody connected says so."""
    daemon.routes[("GET", "/api/v1/peers")] = (200, {"peers": []})
    assert run(data_dir, "peers") == 0
    assert capsys.readouterr().out == "no peers connected\n"


def test_format_peers_duration() -> None:
    """The connected-for column is the time since ``since``, e.g. ``3m12s``."""
    table = format_peers([peer(1000.0)], now=1192.0)
    assert table.splitlines()[1].endswith("3m12s")


def test_connect(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``connect ADDRESS`` posts the address and prints who it connected to."""
    daemon.routes[("POST", "/api/v1/peers")] = (200, {"peer": peer(0.0)})
    assert run(data_dir, "connect", "10.0.0.2:7845") == 0
    assert capsys.readouterr().out == f"connected to {PEER_B} (10.0.0.2:7845)\n"
    method, path, body = daemon.requests[-1]
    assert (method, path, json.loads(body)) == (
        "POST",
        "/api/v1/peers",
        {"address": "10.0.0.2:7845"},
    )


def test_providers(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``providers`` lists local providers with versions and what each peer offers."""
    daemon.routes[("GET", "/api/v1/providers")] = (
        200,
        {
            "local": {"files": {"version": "1", "status": {"shared": 3}}},
            "peers": {PEER_B: {"files": "1", "relay": "2"}},
        },
    )
    assert run(data_dir, "providers") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "local providers:"
    assert out[1].split() == ["files", "1", "shared=3"]
    assert out[2] == "connected peers offer:"
    assert out[3].split() == [PEER_B, "files/1,", "relay/2"]


def test_status(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``status`` prints a short labelled block with human units."""
    daemon.routes[("GET", "/api/v1/status")] = (200, STATUS)
    assert run(data_dir, "status") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["peer", "ID:", PEER_A]
    assert "uptime:" in out and "1h02m" in out
    assert "3 (2 in, 1 out, max 64)" in out
    assert "files/1" in out
    assert "1.5 KiB in, 5.0 MiB out" in out
    second_address = next(i for i, line in enumerate(lines) if line.endswith("[fd00::1]:7845"))
    assert lines[second_address].startswith(" ")  # continuation line under "addresses:"


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (59.9, "59s"), (192, "3m12s"), (7500, "2h05m"), (270000, "3d03h")]
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations are compact: seconds, then minutes, hours, days."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    """Byte counts use binary units with one decimal."""
    assert format_bytes(n) == text


# -- errors --------------------------------------------------------------------------


def test_api_error(daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """An API error prints ``peerctl: <message>`` alone on stderr and exits 1."""
    daemon.routes[("POST", "/api/v1/peers")] = (
        502,
        {"error": "could not connect to 10.0.0.9:7845: refused"},
    )
    assert run(data_dir, "connect", "10.0.0.9:7845") == EXIT_API_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "peerctl: could not connect to 10.0.0.9:7845: refused\n"


def test_api_error_without_json(daemon: FakeDaemon, data_dir: Path) -> None:
    """A non-JSON error answer raises ApiClientError with the HTTP status."""
    daemon.routes[("GET", "/api/v1/x")] = (500, b"<html>oops</html>")
    with pytest.raises(ApiClientError, match="HTTP 500") as info:
        ControlClient(data_dir / "control.sock").get("x")
    assert info.value.status == 500


def test_no_socket(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """No socket file: one line saying peerd is not running, exit 3."""
    assert run(data_dir, "status") == EXIT_NOT_RUNNING
    sock = data_dir / "control.sock"
    assert capsys.readouterr().err == (
        f"peerctl: peerd is not running (no control socket at {sock})\n"
    )


def test_refused_socket(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """A socket file nobody listens on: one line saying it refuses connections."""
    sock = data_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    assert run(data_dir, "status") == EXIT_NOT_RUNNING
    assert capsys.readouterr().err == (
        f"peerctl: peerd is not running (control socket {sock} refuses connections)\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions")
def test_permission_denied(
    daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """A socket we may not open: one line saying permission is denied."""
    os.chmod(daemon.socket_path, 0)
    assert run(data_dir, "id") == EXIT_NOT_RUNNING
    assert "permission denied on control socket" in capsys.readouterr().err


def test_unexpected_answer(
    daemon: FakeDaemon, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """A 2xx answer of the wrong shape gives one line, not a traceback."""
    daemon.routes[("GET", "/api/v1/status")] = (200, {"surprise": True})
    assert run(data_dir, "status") == EXIT_API_ERROR
    err = capsys.readouterr().err
    assert err.startswith("peerctl: unexpected answer from peerd") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["connect"], ["id", "--bogus"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    """Bad arguments give argparse's usage error and exit 2."""
    assert main(argv) == EXIT_USAGE
    assert "usage: peerctl" in capsys.readouterr().err


# -- socket resolution and extension ---------------------------------------------------


def test_peerd_home(daemon: FakeDaemon, data_dir: Path, monkeypatch, capsys) -> None:
    """Without ``--data-dir`` the socket is ``$PEERD_HOME/control.sock``."""
    monkeypatch.setenv("PEERD_HOME", str(data_dir))
    assert main(["id"]) == 0
    assert capsys.readouterr().out == PEER_A + "\n"


def test_data_dir_beats_peerd_home(daemon: FakeDaemon, data_dir: Path, monkeypatch) -> None:
    """``--data-dir`` wins over ``$PEERD_HOME``."""
    monkeypatch.setenv("PEERD_HOME", str(data_dir / "elsewhere"))
    assert run(data_dir, "id") == 0


def test_socket_option(daemon: FakeDaemon, monkeypatch, capsys) -> None:
    """``--socket PATH`` overrides the data dir."""
    monkeypatch.setenv("PEERD_HOME", "/nonexistent")
    assert main(["id", "--socket", str(daemon.socket_path)]) == 0
    assert capsys.readouterr().out == PEER_A + "\n"


def test_default_home(monkeypatch, tmp_path: Path, capsys) -> None:
    """With neither option nor ``$PEERD_HOME``, the socket is ``~/.peerd/control.sock``."""
    monkeypatch.delenv("PEERD_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["status"]) == EXIT_NOT_RUNNING
    assert f"{tmp_path}/.peerd/control.sock" in capsys.readouterr().err


def test_extra_command(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """A provider module can add a subcommand as a Command object."""

    class Echo(Command):
        name = "echo"
        help = "print a word"

        def add_arguments(self, parser) -> None:
            parser.add_argument("word")

        def run(self, client, args) -> int:
            print(args.word, client.get("id")["peer_id"])
            return 0

    assert main(["--data-dir", str(data_dir), "echo", "hi"], commands=[Echo()]) == 0
    assert capsys.readouterr().out == f"hi {PEER_A}\n"


def test_cli_imports_no_twisted() -> None:
    """Importing peerctl pulls in no Twisted, so ``peerctl`` starts fast."""
    code = (
        "import sys, peerd.peerctl.main; print(any(m.startswith('twisted') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("module", "command"), [("files", "get"), ("relay", "relay"), ("storage", "store")]
)
def test_provider_commands_import_no_twisted_either_order(module: str, command: str) -> None:
    """Importing a provider's CLI module first also works, is joined once, and pulls in no Twisted."""
    code = (
        f"import sys, peerd.providers.{module}.cli, peerd.peerctl.main; "
        "names = [c.name for c in peerd.peerctl.main.COMMANDS]; "
        f"print(names.count({command!r}), any(m.startswith('twisted') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.split() == ["1", "False"]
