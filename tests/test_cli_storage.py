"""
Tests for the storage provider's ``peerctl`` commands (``peerd.providers.storage.cli``),
against the canned HTTP server of ``test_cli`` on a unix socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import FakeDaemon
from test_cli_files import ScriptedRoutes

from peerd.peerctl.client import EXIT_API_ERROR, EXIT_OK
from peerd.peerctl.main import COMMANDS, main
from peerd.providers.storage.cli import (
    CheckCommand,
    RenewCommand,
    RepairCommand,
    RetrieveCommand,
    StorageCommand,
    StoreCommand,
    format_check,
    format_storage,
)

API = "/api/v1/providers/storage/"
CAP = "pdcap1-" + "a" * 91
PEER = "AAAAAA-BBBBBB-CCCCCC-DDDDDD-EEEEEE-FFFFFF"


def job(state: str, kind: str = "store", **fields: object) -> dict:
    value = {
        "id": "7",
        "kind": kind,
        "state": state,
        "size": 1000,
        "bytes_done": 1000 if state == "complete" else 500,
        "rate": 100.0,
        "elapsed": 1.0,
        "detail": "uploading",
        "error": None,
        "result": {},
    }
    value.update(fields)
    return value


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(data_dir / "control.sock")
    fake.routes = ScriptedRoutes()
    yield fake
    fake.close()


def run(data_dir: Path, *argv: str) -> int:
    quiet = {"sleep": lambda s: None, "isatty": lambda: False}
    commands = [
        StoreCommand(**quiet),
        RetrieveCommand(**quiet),
        RepairCommand(**quiet),
        CheckCommand(),
        RenewCommand(),
        StorageCommand(),
    ]
    return main(["--data-dir", str(data_dir), *argv], commands=commands)


def test_commands_are_registered() -> None:
    """peerctl knows every storage command."""
    names = {c.name for c in COMMANDS}
    assert {"store", "retrieve", "check", "repair", "renew", "storage"} <= names


def test_store_prints_the_capability(data_dir: Path, daemon: FakeDaemon, capsys) -> None:
    """store posts the options, follows the job and prints only the capability on stdout."""
    result = {"capability": CAP, "size": 1000, "needed": 3, "total": 6, "peers": 6}
    daemon.routes[("POST", API + "store")] = (202, {"job": job("running")})
    daemon.routes[("GET", API + "jobs/7")] = [
        (200, {"job": job("running")}),
        (200, {"job": job("complete", result=result)}),
    ]
    src = data_dir / "f"
    src.write_bytes(b"x")
    code = run(data_dir, "store", str(src), "--needed", "3", "--total", "6", "--allow-doubling")
    out = capsys.readouterr()
    assert code == EXIT_OK
    assert out.out.strip() == CAP
    assert "3-of-6 shares on 6 peers" in out.err
    body = json.loads(daemon.requests[0][2])
    assert body == {
        "path": str(src),
        "needed": 3,
        "total": 6,
        "lease_days": 31,
        "allow_doubling": True,
    }


def test_retrieve_failure_exits_non_zero_with_the_reason(
    data_dir: Path, daemon: FakeDaemon, capsys
) -> None:
    """A failed retrieve prints the daemon's reason and exits 1."""
    reason = "found 2 of the 3 shares needed (asked 2 storage peers)"
    daemon.routes[("POST", API + "retrieve")] = (
        202,
        {"job": job("failed", kind="retrieve", error=reason)},
    )
    code = run(data_dir, "retrieve", CAP, "-o", str(data_dir / "out"))
    assert code == EXIT_API_ERROR
    assert reason in capsys.readouterr().err


def test_retrieve_reports_corrupt_shares(data_dir: Path, daemon: FakeDaemon, capsys) -> None:
    """Skipped corrupt shares are named on stderr; the path goes to stdout."""
    result = {
        "path": "/tmp/out",
        "corrupt": [{"share": 0, "peer": PEER, "why": "corrupt share: block 3 is corrupt"}],
    }
    daemon.routes[("POST", API + "retrieve")] = (
        202,
        {"job": job("complete", kind="retrieve", result=result)},
    )
    assert run(data_dir, "retrieve", CAP, "-o", "/tmp/out") == EXIT_OK
    out = capsys.readouterr()
    assert out.out.strip() == "/tmp/out"
    assert f"skipped corrupt share 0 on {PEER}" in out.err


def test_check_report_and_exit_status(data_dir: Path, daemon: FakeDaemon, capsys) -> None:
    """check shows each share's holder and status; exit 1 when not retrievable."""
    check = {
        "storage_index": "ab" * 16,
        "needed": 3,
        "total": 6,
        "size": 2048,
        "shares": [{"share": 1, "peer": PEER, "status": "corrupt", "why": "bad"}],
        "good_shares": 0,
        "missing": [0, 1, 2, 3, 4, 5],
        "retrievable": False,
        "healthy": False,
        "peers_asked": 2,
    }
    daemon.routes[("POST", API + "check")] = (200, {"check": check})
    assert run(data_dir, "check", CAP) == EXIT_API_ERROR
    text = capsys.readouterr().out
    assert "corrupt: bad" in text and "NOT retrievable" in text
    assert format_check(check) in text


def test_storage_status(data_dir: Path, daemon: FakeDaemon, capsys) -> None:
    """storage shows quota, use and shares per owner."""
    status = {
        "quota": 1 << 30,
        "used": 1 << 20,
        "reserved": 0,
        "available": (1 << 30) - (1 << 20),
        "max_share_size": 1 << 30,
        "min_free_disk": 1 << 30,
        "indexes": 1,
        "shares": 2,
        "owners": {"ab" * 16: {"indexes": 1, "shares": 2, "bytes": 1 << 20}},
        "corrupt_found": 0,
        "expired_collected": 0,
        "refused": 1,
    }
    daemon.routes[("GET", API + "status")] = (200, status)
    assert run(data_dir, "storage") == EXIT_OK
    text = capsys.readouterr().out
    assert text.strip() == format_storage(status)
    assert "1.0 GiB" in text and "ab" * 16 in text
