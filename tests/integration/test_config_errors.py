"""``twistd peerd`` refuses a bad configuration at once, saying where the problem is."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness import free_port, run_twistd

QUICK = 10.0  # seconds a refusal may take, interpreter start-up included


def start(config: Path, home: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``twistd -n --pidfile= peerd --config CONFIG``; expect a quick failure."""
    started = time.monotonic()
    result = run_twistd(["-n", "--pidfile=", "peerd", "--config", str(config)], home)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"started with a bad config:\n{output}"
    assert elapsed < QUICK, f"took {elapsed:.1f}s to refuse"
    return result, output


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "bad.ini"
    config.write_text(f"[peer]\ndata_dir = {tmp_path / 'data'}\n" + text, encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("bogus_key = 1\n", ["[peer]", "bogus_key"], id="unknown-key"),
        pytest.param(
            "[network]\nmax_connections = lots\n",
            ["[network]", "max_connections", "lots"],
            id="bad-value",
        ),
        pytest.param("[netwrok]\npeers =\n", ["[netwrok]"], id="unknown-section"),
        pytest.param("[provider:nope]\n", ["[provider:nope]", "not installed"], id="no-provider"),
    ],
)
def test_bad_config_names_file_section_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    """A bad config stops the start with a message naming file, section and key."""
    config = write(tmp_path, text)
    _, output = start(config, tmp_path)
    assert str(config) in output
    for part in expected:
        assert part in output, f"{part!r} missing from:\n{output}"
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "identity.key").exists(), "it went on after a config error"


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is named in the refusal."""
    config = tmp_path / "no-such.ini"
    _, output = start(config, tmp_path)
    assert str(config) in output
    assert "cannot read config file" in output
    assert "Traceback" not in output


def test_damaged_identity_key(tmp_path: Path) -> None:
    """A damaged identity key is named and left exactly as it was."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key = data / "identity.key"
    damaged = b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"
    key.write_bytes(damaged)
    os.chmod(key, 0o600)
    config = write(tmp_path, f"listen = tcp:{free_port()}:interface=127.0.0.1\n")
    _, output = start(config, tmp_path)
    assert str(key) in output
    assert "damaged private key" in output
    assert "Traceback" not in output
    assert key.read_bytes() == damaged


def test_listen_port_in_use(tmp_path: Path) -> None:
    """A peer port already taken stops the start, naming ``[peer] listen``."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write(tmp_path, f"listen = tcp:{port}:interface=127.0.0.1\n")
        _, output = start(config, tmp_path)
    assert "[peer] listen" in output
    assert str(port) in output
    assert "Traceback" not in output


def test_help() -> None:
    """``twistd -n peerd --help`` exits 0 and documents its options."""
    result = run_twistd(["-n", "peerd", "--help"], Path.cwd())
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--data-dir", "--listen"):
        assert option in result.stdout
